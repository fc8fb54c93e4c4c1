"""The catch-up runs beside the frame loop: frames from the client are handled while it writes.

SPEC.md section 3: undelivered messages arrive in seq order before anything newer. A long
backlog must not hold the client's acks and pings until it is all written, and a live delivery
that arrives meanwhile must still follow it, once.
"""

from __future__ import annotations

import pytest

from apps.accounts.party import Party
from apps.messaging import services
from apps.messaging.models import Message, Status

from .conftest import QUIET, async_test, db, mobile_socket, receive, send_frame

pytestmark = pytest.mark.django_db(transaction=True)

BACKLOG = 25
LONG_BACKLOG = 60


def _send_many(sender, recipient, count: int) -> list[Message]:
    return [
        services.message_send(sender=sender, recipient_phone_number=recipient.phone_number, content=f"m{n}")
        for n in range(count)
    ]


def _statuses(ids) -> dict:
    return dict(Message.objects.filter(pk__in=list(ids)).values_list("pk", "status"))


@async_test
async def test_an_ack_during_a_long_catch_up_is_recorded_before_it_ends_and_a_pong_follows_it(
    settings, sender, mobile_user, mobile_token, redis
):
    settings.MESSAGING_CATCHUP_CHUNK = 1  # one claim per message: the catch-up takes a while
    messages = await db(_send_many)(sender, mobile_user, LONG_BACKLOG)
    async with mobile_socket(mobile_token) as ws:
        first = await receive(ws)
        assert first["type"] == "message" and first["message"]["seq"] == 1
        await send_frame(ws, {"type": "ack", "message_ids": [first["message"]["id"]]})
        await send_frame(ws, {"type": "ping"})
        recorded_by = None
        for seq in range(2, LONG_BACKLOG + 1):
            frame = await receive(ws)
            assert frame["type"] == "message" and frame["message"]["seq"] == seq, frame  # pong last
            if (
                recorded_by is None
                and (await db(_statuses)([messages[0].pk]))[messages[0].pk] == Status.DELIVERED
            ):
                recorded_by = seq
        # Recorded while the backlog was still being written, not after its last frame.
        assert recorded_by is not None and recorded_by < LONG_BACKLOG // 3, recorded_by
        assert await receive(ws) == {"type": "pong"}  # the barrier: the catch-up is over
        assert await ws.receive_nothing(QUIET)


@async_test
async def test_a_live_delivery_during_the_catch_up_follows_it_once(
    settings, sender, mobile_user, mobile_token, redis
):
    settings.MESSAGING_CATCHUP_CHUNK = 1
    await db(_send_many)(sender, mobile_user, BACKLOG)
    async with mobile_socket(mobile_token) as ws:
        assert (await receive(ws))["message"]["seq"] == 1  # the catch-up has begun
        live = await db(_send_many)(sender, mobile_user, 1)
        # Written by a worker while the catch-up is still going.
        assert await db(services.message_deliver)(message_id=live[0].pk) in ("sent", "skipped")
        frames = [await receive(ws) for _ in range(BACKLOG)]
        assert [f["message"]["seq"] for f in frames] == list(range(2, BACKLOG + 2))
        assert await ws.receive_nothing(QUIET)


@async_test
async def test_closing_during_the_catch_up_releases_what_it_claimed_and_not_written(
    settings, sender, mobile_user, mobile_token, redis
):
    settings.MESSAGING_CATCHUP_CHUNK = 1
    messages = await db(_send_many)(sender, mobile_user, BACKLOG)
    async with mobile_socket(mobile_token) as ws:
        assert (await receive(ws))["message"]["seq"] == 1
    # Closed mid-way: nothing is left `sent` to a connection that is gone.
    statuses = await db(_statuses)([m.pk for m in messages])
    assert Status.SENT not in set(statuses.values()), statuses
    assert await db(services.recipient_deliver_backlog)(recipient=Party.mobile(mobile_user.pk)) == 0
