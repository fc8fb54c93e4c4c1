"""`skip` frames over a real socket: a canceled message's seq is explained, live and on catch-up."""

from __future__ import annotations

import pytest

from apps.messaging import services
from apps.messaging.models import Message, Status
from apps.messaging.services import schedule

from .conftest import QUIET, async_test, db, mobile_socket, receive, receive_messages, round_trip

pytestmark = pytest.mark.django_db(transaction=True)


def _send(sender, recipient, content: str = "hello") -> Message:
    return services.message_send(
        sender=sender, recipient_phone_number=recipient.phone_number, content=content
    )


def _cancel(sender, message: Message) -> None:
    schedule.message_cancel(sender=sender, message_id=message.pk)


@async_test
async def test_a_connected_client_hears_skip_when_a_pending_message_is_canceled(
    sender, mobile_user, mobile_token, redis
):
    async with mobile_socket(mobile_token) as ws:
        await round_trip(ws)  # catch-up done
        message = await db(_send)(sender, mobile_user)
        assert await db(services.message_deliver)(message_id=message.pk) == "sent"
        [payload] = await receive_messages(ws, 1)
        assert payload["seq"] == 1
        # A message that goes pending (e.g. its ack timed out) can still be canceled.
        await db(lambda: Message.objects.filter(pk=message.pk).update(status=Status.PENDING))()
        await db(_cancel)(sender, message)

        assert await receive(ws) == {"type": "skip", "seq": 1}
        assert await ws.receive_nothing(QUIET)


@async_test
async def test_a_reconnecting_client_gets_skip_in_place_of_the_canceled_message(
    sender, mobile_user, mobile_token, redis
):
    first, canceled, last = [await db(_send)(sender, mobile_user, f"m{n}") for n in range(3)]
    await db(_cancel)(sender, canceled)

    async with mobile_socket(mobile_token) as ws:
        frames = [await receive(ws) for _ in range(3)]
        assert await ws.receive_nothing(QUIET)

    assert [f["type"] for f in frames] == ["message", "skip", "message"]
    assert [f["message"]["id"] for f in (frames[0], frames[2])] == [str(first.pk), str(last.pk)]
    assert frames[1] == {"type": "skip", "seq": 2}
    assert (await db(Message.objects.get)(pk=canceled.pk)).status == Status.CANCELED
