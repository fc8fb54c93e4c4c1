"""A socket's receipts are recorded beside it: deliveries do not wait for them, pings and closes do."""

from __future__ import annotations

import asyncio

import pytest
from django.db import OperationalError

from apps.messaging import services
from apps.messaging.models import Channel, DeliveryAttempt, Message, Outcome, Status
from apps.realtime import receipts
from apps.realtime.consumers import CLOSE_TRY_AGAIN_LATER

from .conftest import (
    TIMEOUT,
    async_test,
    db,
    mobile_socket,
    receive,
    receive_messages,
    round_trip,
    send_frame,
)
from .test_consumer import _send

pytestmark = pytest.mark.django_db(transaction=True)


def _status(message_id) -> str:
    return Message.objects.values_list("status", flat=True).get(pk=message_id)


def _outcomes(message_id) -> list[str]:
    return list(
        DeliveryAttempt.objects.filter(message_id=message_id, channel=Channel.WEBSOCKET)
        .order_by("at", "id")
        .values_list("outcome", flat=True)
    )


@pytest.fixture
def held_receipts(monkeypatch):
    """Hold every receipt transaction of this process until the test sets the returned event."""
    release = asyncio.Event()
    apply = receipts._apply

    async def held(batch):
        await release.wait()
        return await apply(batch)

    monkeypatch.setattr(receipts, "_apply", held)
    return release


@async_test
async def test_a_delivery_is_written_while_the_sockets_last_ack_is_still_being_recorded(
    sender, mobile_user, mobile_token, redis, held_receipts
):
    first = await db(_send)(sender, mobile_user, "first")
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await round_trip(ws)  # caught up: what follows is live
        await send_frame(ws, {"type": "ack", "message_ids": [str(first.pk)]})
        second = await db(_send)(sender, mobile_user, "second")
        assert await db(services.message_deliver)(message_id=second.pk) == "sent"

        # Written at once, though the ack before it is not recorded yet.
        assert [m["id"] for m in await receive_messages(ws, 1)] == [str(second.pk)]
        assert await db(_status)(first.pk) == Status.SENT

        # A ping is answered only once every receipt before it is recorded.
        await send_frame(ws, {"type": "ping"})
        assert await ws.receive_nothing(0.3)
        held_receipts.set()
        assert await receive(ws) == {"type": "pong"}
        assert await db(_status)(first.pk) == Status.DELIVERED


@async_test
async def test_an_ack_followed_at_once_by_the_close_settles_its_message_before_the_release(
    sender, mobile_user, mobile_token, redis, held_receipts
):
    acked = await db(_send)(sender, mobile_user, "acked")
    unacked = await db(_send)(sender, mobile_user, "unacked")
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 2)
        await send_frame(ws, {"type": "ack", "message_ids": [str(acked.pk)]})
        asyncio.get_running_loop().call_later(0.2, held_receipts.set)
    # The close waited for the ack: delivered, never released to pending (and no push for it).
    assert await db(_status)(acked.pk) == Status.DELIVERED
    assert await db(_outcomes)(acked.pk) == [Outcome.ACKED]
    assert await db(_status)(unacked.pk) == Status.PENDING
    assert await db(_outcomes)(unacked.pk) == [Outcome.OFFLINE]


@async_test
async def test_a_receipt_that_cannot_be_recorded_closes_the_socket_to_try_again_later(
    sender, mobile_user, mobile_token, redis, monkeypatch
):
    message = await db(_send)(sender, mobile_user)

    async def unavailable(batch):
        raise OperationalError("the database went away")

    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await round_trip(ws)
        monkeypatch.setattr(receipts, "_apply", unavailable)
        await send_frame(ws, {"type": "ack", "message_ids": [str(message.pk)]})
        closing = await ws.receive_output(timeout=TIMEOUT)
        assert closing == {"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER}
        monkeypatch.undo()  # the release at the close can reach the database again
    # Not acked: released for the next connection, never marked delivered.
    assert await db(_status)(message.pk) == Status.PENDING
