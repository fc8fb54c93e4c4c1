"""Mobile WebSocket authentication and Origin validation (SPEC.md section 3)."""

from __future__ import annotations

import time

import pytest

from apps.accounts import presence
from apps.accounts.party import Party
from apps.accounts.services import TICKET_PREFIX, realtime_ticket_issue, token_create
from apps.messaging import services
from apps.messaging.models import DeliveryAttempt, Message, Status

from .conftest import (
    REFUSED_CLOSE_TIMEOUT,
    TIMEOUT,
    assert_closed_unauthenticated,
    async_test,
    communicator,
    db,
    mobile_socket,
    receive_messages,
    round_trip,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _presence_records(redis) -> int:
    return redis.zcard(presence.CONNECTIONS)


# --- token in the Authorization header ------------------------------------------------------


@async_test
async def test_header_token_connects_and_registers_presence(mobile_user, mobile_token, redis):
    async with mobile_socket(mobile_token) as ws:
        await round_trip(ws)
        assert await db(presence.is_online)(Party.mobile(mobile_user.pk))
    assert not await db(presence.is_online)(Party.mobile(mobile_user.pk))


@async_test
async def test_missing_token_is_closed_with_4401(mobile_user, redis):
    await assert_closed_unauthenticated(communicator())
    assert _presence_records(redis) == 0


@async_test
async def test_unknown_token_is_closed_with_4401(mobile_user, redis):
    await assert_closed_unauthenticated(communicator("not-a-real-token"))
    assert _presence_records(redis) == 0


@async_test
async def test_non_token_scheme_is_closed_with_4401(mobile_user, mobile_token, redis):
    ws = communicator()
    ws.scope["headers"] = [(b"authorization", f"Bearer {mobile_token}".encode())]
    await assert_closed_unauthenticated(ws)


@async_test
async def test_inactive_mobile_users_token_is_closed_with_4401(mobile_user, mobile_token, redis):
    await db(type(mobile_user).objects.filter(pk=mobile_user.pk).update)(is_active=False)
    await assert_closed_unauthenticated(communicator(mobile_token))


@async_test
async def test_business_token_is_refused_on_mobile_socket(sender, redis):
    token = await db(token_create)(owner=sender)
    await assert_closed_unauthenticated(communicator(token))
    assert _presence_records(redis) == 0


@async_test
async def test_refused_connection_gets_no_catch_up(sender, mobile_user, redis):
    """A refused socket must not claim the user's messages (they would wait for an ack)."""
    message = await db(services.message_send)(
        sender=sender, recipient_phone_number=mobile_user.phone_number, content="hi"
    )
    await assert_closed_unauthenticated(communicator("wrong"))
    assert await db(Message.objects.values_list("status", flat=True).get)(pk=message.pk) == Status.QUEUED
    assert not await db(DeliveryAttempt.objects.filter(message=message).exists)()


@async_test
async def test_long_lived_token_in_query_string_is_refused(mobile_user, mobile_token, redis):
    await assert_closed_unauthenticated(communicator(path=f"/ws/mobile/?token={mobile_token}"))
    await assert_closed_unauthenticated(communicator(path=f"/ws/mobile/?ticket={mobile_token}"))
    assert _presence_records(redis) == 0


# --- single-use tickets ---------------------------------------------------------------------


@async_test
async def test_ticket_connects_once(mobile_user, redis):
    ticket, _ = await db(realtime_ticket_issue)(principal=mobile_user)
    async with mobile_socket(path=f"/ws/mobile/?ticket={ticket}") as ws:
        await round_trip(ws)
        assert await db(presence.is_online)(Party.mobile(mobile_user.pk))
    assert not redis.exists(TICKET_PREFIX + ticket)
    await assert_closed_unauthenticated(communicator(path=f"/ws/mobile/?ticket={ticket}"))


@async_test
async def test_ticket_is_valid_at_most_sixty_seconds(mobile_user, redis):
    ticket, _ = await db(realtime_ticket_issue)(principal=mobile_user)
    assert 0 < redis.ttl(TICKET_PREFIX + ticket) <= 60


@async_test
async def test_expired_ticket_is_closed_with_4401(mobile_user, redis):
    ticket, _ = await db(realtime_ticket_issue)(principal=mobile_user)
    # Let Redis expire it the way the TTL would.
    redis.pexpire(TICKET_PREFIX + ticket, 1)
    deadline = time.monotonic() + TIMEOUT
    while redis.exists(TICKET_PREFIX + ticket) and time.monotonic() < deadline:
        time.sleep(0.005)
    await assert_closed_unauthenticated(communicator(path=f"/ws/mobile/?ticket={ticket}"))
    assert _presence_records(redis) == 0


@async_test
async def test_unknown_ticket_is_closed_with_4401(mobile_user, redis):
    await assert_closed_unauthenticated(communicator(path="/ws/mobile/?ticket=made-up"))


@async_test
async def test_business_ticket_is_refused_on_mobile_socket(sender, redis):
    ticket, _ = await db(realtime_ticket_issue)(principal=sender)
    await assert_closed_unauthenticated(communicator(path=f"/ws/mobile/?ticket={ticket}"))


@async_test
async def test_ticket_of_one_user_connects_as_that_user(sender, mobile_user, stranger, redis):
    await db(services.message_send)(sender=sender, recipient_phone_number=stranger.phone_number, content="s")
    ticket, _ = await db(realtime_ticket_issue)(principal=mobile_user)
    async with mobile_socket(path=f"/ws/mobile/?ticket={ticket}") as ws:
        await round_trip(ws)  # nothing of the stranger's arrives before the pong
        assert await db(presence.online_parties)([Party.of(mobile_user), Party.of(stranger)]) == {
            Party.of(mobile_user)
        }


# --- Origin ---------------------------------------------------------------------------------


@async_test
@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "http://localhost.evil.com", "null", "http://evil.com:80"]
)
async def test_foreign_origin_is_refused_even_with_a_valid_token(origin, mobile_user, mobile_token, redis):
    ws = communicator(mobile_token, origin=origin)
    connected, _ = await ws.connect(timeout=TIMEOUT)
    assert not connected
    await ws.disconnect(timeout=REFUSED_CLOSE_TIMEOUT)
    assert _presence_records(redis) == 0


@async_test
async def test_missing_origin_is_accepted_for_native_apps(sender, mobile_user, mobile_token, redis):
    await db(services.message_send)(
        sender=sender, recipient_phone_number=mobile_user.phone_number, content="x"
    )
    async with mobile_socket(mobile_token) as ws:
        assert [m["seq"] for m in await receive_messages(ws, 1)] == [1]


@async_test
@pytest.mark.parametrize("origin", ["http://localhost", "http://localhost:8000", "https://127.0.0.1"])
async def test_allowed_origin_is_accepted(origin, mobile_user, mobile_token, redis):
    async with mobile_socket(mobile_token, origin=origin) as ws:
        await round_trip(ws)
