"""The mobile WebSocket end to end through the real ASGI application and Redis channel layer.

SPEC.md section 3 "Mobile WebSocket": catch-up on connect, live delivery to every connection,
client frames (ack, read, ping) and error frames, and what closing a connection releases.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from autobahn.exception import Disconnected
from channels.layers import get_channel_layer
from django.utils import timezone

from apps.accounts import presence
from apps.accounts.models import PartyKind
from apps.accounts.party import Party
from apps.common.logging import correlation_context
from apps.messaging import services
from apps.messaging.frames import message_frame, message_payload
from apps.messaging.models import Channel, DeliveryAttempt, Message, Outcome, Status
from apps.messaging.outgoing import encode_frame
from apps.realtime.consumers import MAX_IDS_PER_FRAME, sends_dropped_after_close
from tests.factories import MessageFactory

from .conftest import QUIET, async_test, db, mobile_socket, receive, receive_messages, round_trip, send_frame

pytestmark = pytest.mark.django_db(transaction=True)


# --- helpers (run in the database thread through `db`) --------------------------------------


def _send(sender, recipient, content: str = "hello") -> Message:
    return services.message_send(
        sender=sender, recipient_phone_number=recipient.phone_number, content=content
    )


def _send_many(sender, recipient, count: int) -> list[Message]:
    return [_send(sender, recipient, f"message {n}") for n in range(count)]


def _state(message_ids) -> dict[uuid.UUID, str]:
    return dict(Message.objects.filter(pk__in=list(message_ids)).values_list("pk", "status"))


def _fresh(message_id) -> Message:
    return Message.objects.select_related("sender").get(pk=message_id)


def _frame(message_id) -> dict:
    return message_frame(message_payload(_fresh(message_id)))


def _attempts(message_id) -> list[tuple[str, str, str]]:
    return list(
        DeliveryAttempt.objects.filter(message_id=message_id)
        .order_by("at", "id")
        .values_list("channel", "outcome", "error")
    )


def _attempt_count() -> int:
    return DeliveryAttempt.objects.count()


def _payloads(message_ids) -> list[dict]:
    return [message_payload(_fresh(pk)) for pk in message_ids]


def _ids(payloads: list[dict]) -> list[str]:
    return [p["id"] for p in payloads]


def _seqs(payloads: list[dict]) -> list[int]:
    return [p["seq"] for p in payloads]


# --- catch-up on connect --------------------------------------------------------------------


def _mixed_backlog(sender, recipient) -> dict[str, Message]:
    """Store one message per status, seq 1..8, in an order that interleaves the statuses."""
    past = timezone.now() - timedelta(minutes=1)
    made = {}
    made["queued"] = _send(sender, recipient, "queued")
    made["delivered"] = MessageFactory(sender=sender, recipient=recipient, status=Status.DELIVERED)
    made["pending"] = MessageFactory(sender=sender, recipient=recipient, status=Status.PENDING)
    made["read"] = MessageFactory(sender=sender, recipient=recipient, status=Status.READ)
    made["sent"] = MessageFactory(sender=sender, recipient=recipient, status=Status.SENT)
    made["failed"] = MessageFactory(sender=sender, recipient=recipient, status=Status.FAILED)
    # Expired but not yet swept: still `pending` in the table, must not go out.
    made["expired"] = MessageFactory(
        sender=sender, recipient=recipient, status=Status.PENDING, ttl_seconds=1, expires_at=past
    )
    made["queued_last"] = _send(sender, recipient, "queued last")
    return made


@async_test
async def test_connect_sends_every_undelivered_message_in_seq_order(sender, mobile_user, mobile_token, redis):
    made = await db(_mixed_backlog)(sender, mobile_user)
    due = [made[k].pk for k in ("queued", "pending", "sent", "queued_last")]
    untouched = {k: made[k] for k in ("delivered", "read", "failed", "expired")}
    async with mobile_socket(mobile_token) as ws:
        received = await receive_messages(ws, len(due))
        assert await ws.receive_nothing(QUIET)

        assert _seqs(received) == [1, 3, 5, 8]
        assert received == await db(_payloads)(due)
        assert set((await db(_state)(due)).values()) == {Status.SENT}
        for pk in due:
            assert await db(_attempts)(pk) == [(Channel.WEBSOCKET, Outcome.SENT, "")]
            assert (await db(_fresh)(pk)).sent_at is not None
        # Delivered, read, failed and expired messages neither go out nor change.
        assert await db(_state)([m.pk for m in untouched.values()]) == {
            m.pk: m.status for m in untouched.values()
        }
        for message in untouched.values():
            assert await db(_attempts)(message.pk) == []


@async_test
async def test_connect_with_nothing_undelivered_sends_nothing(sender, mobile_user, mobile_token, redis):
    await db(MessageFactory)(sender=sender, recipient=mobile_user, status=Status.DELIVERED)
    async with mobile_socket(mobile_token) as ws:
        await round_trip(ws)  # the pong is the first frame: no message came before it
    assert await db(_attempt_count)() == 0


@async_test
async def test_catch_up_sends_only_the_connecting_users_messages(
    sender, mobile_user, mobile_token, stranger, redis
):
    theirs = await db(_send)(sender, stranger, "for the stranger")
    mine = await db(_send)(sender, mobile_user, "for me")
    async with mobile_socket(mobile_token) as ws:
        assert _ids(await receive_messages(ws, 1)) == [str(mine.pk)]
        await round_trip(ws)
    assert (await db(_state)([theirs.pk]))[theirs.pk] == Status.QUEUED


@async_test
async def test_catch_up_larger_than_one_chunk_arrives_complete_in_seq_order(
    settings, sender, mobile_user, mobile_token, redis
):
    settings.MESSAGING_CATCHUP_CHUNK = 2
    messages = await db(_send_many)(sender, mobile_user, 5)
    async with mobile_socket(mobile_token) as ws:
        received = await receive_messages(ws, 5)
        assert await ws.receive_nothing(QUIET)
    assert _seqs(received) == [1, 2, 3, 4, 5]
    assert _ids(received) == [str(m.pk) for m in messages]


@async_test
async def test_second_connection_receives_unacked_messages_again_with_same_id_and_seq(
    sender, mobile_user, mobile_token, redis
):
    messages = await db(_send_many)(sender, mobile_user, 2)
    async with mobile_socket(mobile_token) as first:
        first_frames = await receive_messages(first, 2)
        async with mobile_socket(mobile_token) as second:
            second_frames = await receive_messages(second, 2)
            assert await second.receive_nothing(QUIET)
        assert await first.receive_nothing(QUIET)  # the second catch-up is not broadcast
    assert [(p["id"], p["seq"]) for p in second_frames] == [(p["id"], p["seq"]) for p in first_frames]
    assert await db(Message.objects.count)() == 2
    for message in messages:
        assert [a[1] for a in await db(_attempts)(message.pk)] == [Outcome.OFFLINE, Outcome.OFFLINE]


@async_test
async def test_reconnect_after_unacked_close_receives_same_messages_in_seq_order(
    sender, mobile_user, mobile_token, redis
):
    await db(_send_many)(sender, mobile_user, 3)
    async with mobile_socket(mobile_token) as first:
        before = await receive_messages(first, 3)
    async with mobile_socket(mobile_token) as second:
        after = await receive_messages(second, 3)
        assert await second.receive_nothing(QUIET)
    assert after == before
    assert _seqs(after) == [1, 2, 3]


@async_test
async def test_reconnect_does_not_resend_acked_messages(sender, mobile_user, mobile_token, redis):
    messages = await db(_send_many)(sender, mobile_user, 3)
    async with mobile_socket(mobile_token) as first:
        await receive_messages(first, 3)
        await send_frame(first, {"type": "ack", "message_ids": [str(messages[0].pk)]})
        await round_trip(first)
    async with mobile_socket(mobile_token) as second:
        assert _seqs(await receive_messages(second, 2)) == [2, 3]
        assert await second.receive_nothing(QUIET)


@async_test
async def test_retry_of_a_caught_up_message_is_written_again_on_the_same_socket(
    sender, mobile_user, mobile_token, redis
):
    """A later redelivery (after an ack timeout or stale sweep) must not be mistaken for a
    duplicate of the catch-up frame."""
    message = await db(_send)(sender, mobile_user)
    async with mobile_socket(mobile_token) as ws:
        first = await receive_messages(ws, 1)
        await round_trip(ws)
        # The stale-connection sweep gave up on the frame; the pending sweep resends it.
        await db(services.messages_release_unacked)(recipients=[Party.mobile(mobile_user.pk)], reason="stale")
        assert await db(services.recipient_deliver_backlog)(recipient=Party.mobile(mobile_user.pk)) == 1
        assert await receive_messages(ws, 1) == first
        assert await ws.receive_nothing(QUIET)
        assert await db(_state)([message.pk]) == {message.pk: Status.SENT}


# --- strict ordering ------------------------------------------------------------------------


@async_test
async def test_strict_mode_sends_next_message_only_after_ack(
    settings, sender, mobile_user, mobile_token, redis
):
    settings.MESSAGING_ORDERING = "strict"
    first, second, third = await db(_send_many)(sender, mobile_user, 3)
    async with mobile_socket(mobile_token) as ws:
        assert _ids(await receive_messages(ws, 1)) == [str(first.pk)]
        assert await ws.receive_nothing(QUIET)
        # Nothing more goes while the first is in flight.
        assert await db(services.recipient_deliver_backlog)(recipient=Party.mobile(mobile_user.pk)) == 0
        assert await ws.receive_nothing(QUIET)
        assert await db(_state)([first.pk, second.pk, third.pk]) == {
            first.pk: Status.SENT,
            second.pk: Status.QUEUED,
            third.pk: Status.QUEUED,
        }

        await send_frame(ws, {"type": "ack", "message_ids": [str(first.pk)]})
        await round_trip(ws)
        assert await db(services.recipient_deliver_backlog)(recipient=Party.mobile(mobile_user.pk)) == 1
        assert await receive_messages(ws, 1) == await db(_payloads)([second.pk])
        assert await ws.receive_nothing(QUIET)
        assert await db(_state)([first.pk, second.pk, third.pk]) == {
            first.pk: Status.DELIVERED,
            second.pk: Status.SENT,
            third.pk: Status.QUEUED,
        }


@async_test
async def test_strict_mode_held_live_message_goes_right_after_the_previous_ack(
    settings, sender, mobile_user, mobile_token, redis
):
    settings.MESSAGING_ORDERING = "strict"
    async with mobile_socket(mobile_token) as ws:
        await round_trip(ws)
        first = await db(_send)(sender, mobile_user, "first")
        assert await db(services.message_deliver)(message_id=first.pk) == "sent"
        second = await db(_send)(sender, mobile_user, "second")
        assert await db(services.message_deliver)(message_id=second.pk) == "held"
        assert _ids(await receive_messages(ws, 1)) == [str(first.pk)]
        assert await ws.receive_nothing(QUIET)

        await send_frame(ws, {"type": "ack", "message_ids": [str(first.pk)]})
        await round_trip(ws)
        # Held is not a retry: nothing makes the recipient wait once the previous one is acked.
        assert await db(services.recipient_deliver_backlog)(recipient=Party.mobile(mobile_user.pk)) == 1
        assert _ids(await receive_messages(ws, 1)) == [str(second.pk)]


@async_test
async def test_strict_mode_reconnect_resends_only_the_first_undelivered(
    settings, sender, mobile_user, mobile_token, redis
):
    settings.MESSAGING_ORDERING = "strict"
    messages = await db(_send_many)(sender, mobile_user, 3)
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
    async with mobile_socket(mobile_token) as ws:
        assert _ids(await receive_messages(ws, 1)) == [str(messages[0].pk)]
        assert await ws.receive_nothing(QUIET)


# --- live delivery --------------------------------------------------------------------------


@async_test
async def test_live_delivery_reaches_every_connection_of_the_recipient_only(
    sender, mobile_user, mobile_token, stranger_token, redis
):
    async with (
        mobile_socket(mobile_token) as phone,
        mobile_socket(mobile_token) as tablet,
        mobile_socket(stranger_token) as strangers,
    ):
        for ws in (phone, tablet, strangers):
            await round_trip(ws)  # catch-up done: the message below can only arrive live
        message = await db(_send)(sender, mobile_user, "live")
        assert await db(services.message_deliver)(message_id=message.pk) == "sent"

        expected = await db(_payloads)([message.pk])
        assert await receive_messages(phone, 1) == expected
        assert await receive_messages(tablet, 1) == expected
        assert await strangers.receive_nothing(QUIET)
        assert await phone.receive_nothing(QUIET)
        assert await tablet.receive_nothing(QUIET)
    # One group write is one attempt, however many connections the user has.
    assert [a[1] for a in await db(_attempts)(message.pk)] == [Outcome.OFFLINE]


@async_test
async def test_live_delivery_follows_catch_up_in_seq_order(sender, mobile_user, mobile_token, redis):
    await db(_send_many)(sender, mobile_user, 2)
    async with mobile_socket(mobile_token) as ws:
        assert _seqs(await receive_messages(ws, 2)) == [1, 2]
        await round_trip(ws)
        live = await db(_send)(sender, mobile_user, "live")
        assert await db(services.message_deliver)(message_id=live.pk) == "sent"
        assert _seqs(await receive_messages(ws, 1)) == [3]
        assert await ws.receive_nothing(QUIET)


@async_test
async def test_live_delivery_marks_message_sent_with_one_attempt(sender, mobile_user, mobile_token, redis):
    async with mobile_socket(mobile_token) as ws:
        await round_trip(ws)
        message = await db(_send)(sender, mobile_user)
        assert await db(services.message_deliver)(message_id=message.pk) == "sent"
        await receive_messages(ws, 1)
        assert await db(_state)([message.pk]) == {message.pk: Status.SENT}
        assert await db(_attempts)(message.pk) == [(Channel.WEBSOCKET, Outcome.SENT, "")]


@async_test
async def test_delivery_to_a_user_without_connection_reaches_no_socket(
    sender, mobile_user, stranger_token, redis
):
    async with mobile_socket(stranger_token) as strangers:
        await round_trip(strangers)
        message = await db(_send)(sender, mobile_user)
        assert await db(services.message_deliver)(message_id=message.pk) == "offline"
        assert await strangers.receive_nothing(QUIET)
    assert await db(_state)([message.pk]) == {message.pk: Status.PENDING}


# --- correlation ids ------------------------------------------------------------------------


def _deliver_in_correlation(message_id, correlation_id: str) -> str:
    with correlation_context(correlation_id):
        return services.message_deliver(message_id=message_id)


@async_test
async def test_correlation_id_on_the_delivery_event_leaves_the_frame_unchanged(
    sender, mobile_user, mobile_token, redis
):
    async with mobile_socket(mobile_token) as ws:
        await round_trip(ws)
        message = await db(_send)(sender, mobile_user)
        assert await db(_deliver_in_correlation)(message.pk, "req-1234") == "sent"
        frame = await receive(ws)
        assert frame == await db(_frame)(message.pk)
        assert "correlation_id" not in json.dumps(frame)


@async_test
async def test_delivery_event_without_correlation_id_is_written(sender, mobile_user, mobile_token, redis):
    message = await db(MessageFactory)(sender=sender, recipient=mobile_user, status=Status.DELIVERED)
    payload = (await db(_payloads)([message.pk]))[0]
    async with mobile_socket(mobile_token) as ws:
        await round_trip(ws)
        await get_channel_layer().group_send(
            Party(PartyKind.MOBILE, mobile_user.pk).group,
            {"type": "deliver.messages", "messages": [{"id": payload["id"], "frame": encode_frame(payload)}]},
        )
        assert await receive(ws) == {"type": "message", "message": payload}


@async_test
async def test_a_late_frame_for_a_message_acked_on_this_connection_is_not_written_again(
    sender, mobile_user, mobile_token, redis
):
    message = await db(_send)(sender, mobile_user)
    payload = (await db(_payloads)([message.pk]))[0]
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)  # the catch-up
        await send_frame(ws, {"type": "ack", "message_ids": [str(message.pk)]})
        await round_trip(ws)
        # A worker's write of the same message that raced the catch-up arrives after the ack
        # (tests/e2e/test_faults.py met it): the app must not see it again.
        await get_channel_layer().group_send(
            Party(PartyKind.MOBILE, mobile_user.pk).group,
            {"type": "deliver.messages", "messages": [{"id": payload["id"], "frame": encode_frame(payload)}]},
        )
        assert await ws.receive_nothing(QUIET)
    assert (await db(_fresh)(message.pk)).status == Status.DELIVERED


# --- frames from the client -----------------------------------------------------------------


def _heartbeats(redis, user_id: int) -> dict[str, float]:
    return {k.decode(): float(v) for k, v in redis.hgetall(f"presence:m:{user_id}").items()}


@async_test
async def test_ping_answers_pong_and_refreshes_the_heartbeat(mobile_user, mobile_token, redis, settings):
    async with mobile_socket(mobile_token) as ws:
        [(channel_name, _)] = _heartbeats(redis, mobile_user.pk).items()
        old = timezone.now().timestamp() - settings.PRESENCE_STALE_SECONDS - 10
        await db(presence.connection_seen)(
            party=Party.mobile(mobile_user.pk), channel_name=channel_name, now=old
        )
        assert not await db(presence.is_online)(Party.mobile(mobile_user.pk))

        await send_frame(ws, {"type": "ping"})
        assert await receive(ws) == {"type": "pong"}

        assert await db(presence.is_online)(Party.mobile(mobile_user.pk))
        assert _heartbeats(redis, mobile_user.pk)[channel_name] > old
        assert await ws.receive_nothing(QUIET)


@async_test
async def test_ack_marks_delivered_and_a_repeated_ack_changes_nothing(
    sender, mobile_user, mobile_token, redis
):
    message = await db(_send)(sender, mobile_user)
    ack = {"type": "ack", "message_ids": [str(message.pk)]}
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await send_frame(ws, ack)
        await round_trip(ws)
        delivered = await db(_fresh)(message.pk)
        assert (delivered.status, delivered.next_attempt_at) == (Status.DELIVERED, None)
        assert delivered.delivered_at is not None
        assert await db(_attempts)(message.pk) == [(Channel.WEBSOCKET, Outcome.ACKED, "")]

        await send_frame(ws, ack)
        await round_trip(ws)
        again = await db(_fresh)(message.pk)
        assert (again.status, again.delivered_at) == (Status.DELIVERED, delivered.delivered_at)
        assert await db(_attempt_count)() == 1
        assert await db(Message.objects.count)() == 1


@async_test
async def test_read_marks_read_and_a_later_ack_keeps_it_read(sender, mobile_user, mobile_token, redis):
    message = await db(_send)(sender, mobile_user)
    ids = [str(message.pk)]
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await send_frame(ws, {"type": "read", "message_ids": ids})
        await round_trip(ws)
        read = await db(_fresh)(message.pk)
        assert read.status == Status.READ
        assert read.read_at is not None and read.delivered_at is not None

        await send_frame(ws, {"type": "ack", "message_ids": ids})
        await send_frame(ws, {"type": "read", "message_ids": ids})
        await round_trip(ws)
        after = await db(_fresh)(message.pk)
        assert (after.status, after.read_at, after.delivered_at) == (
            Status.READ,
            read.read_at,
            read.delivered_at,
        )
        assert await db(_attempts)(message.pk) == [(Channel.WEBSOCKET, Outcome.ACKED, "")]


@async_test
async def test_read_after_ack_keeps_the_delivered_time(sender, mobile_user, mobile_token, redis):
    message = await db(_send)(sender, mobile_user)
    ids = [str(message.pk)]
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await send_frame(ws, {"type": "ack", "message_ids": ids})
        await round_trip(ws)
        delivered_at = (await db(_fresh)(message.pk)).delivered_at
        await send_frame(ws, {"type": "read", "message_ids": ids})
        await round_trip(ws)
    read = await db(_fresh)(message.pk)
    assert (read.status, read.delivered_at) == (Status.READ, delivered_at)
    assert read.read_at >= delivered_at


@async_test
async def test_receipts_for_another_users_messages_are_ignored(
    sender, mobile_user, mobile_token, stranger, redis
):
    mine = await db(_send)(sender, mobile_user)
    theirs = await db(MessageFactory)(sender=sender, recipient=stranger, status=Status.SENT)
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await send_frame(ws, {"type": "read", "message_ids": [str(theirs.pk)]})
        await send_frame(ws, {"type": "ack", "message_ids": [str(theirs.pk), str(mine.pk)]})
        await round_trip(ws)  # no error frame: foreign ids are ignored silently
    assert await db(_state)([mine.pk, theirs.pk]) == {mine.pk: Status.DELIVERED, theirs.pk: Status.SENT}
    stored = await db(_fresh)(theirs.pk)
    assert (stored.delivered_at, stored.read_at) == (None, None)


@async_test
async def test_malformed_ids_are_ignored_and_valid_ones_acked(sender, mobile_user, mobile_token, redis):
    message = await db(_send)(sender, mobile_user)
    junk = ["not-a-uuid", 7, None, {"id": str(message.pk)}, [str(message.pk)], "", str(uuid.uuid4())]
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await send_frame(ws, {"type": "ack", "message_ids": junk})
        await round_trip(ws)
        assert await db(_state)([message.pk]) == {message.pk: Status.SENT}
        await send_frame(ws, {"type": "ack", "message_ids": [*junk, str(message.pk)]})
        await round_trip(ws)
    assert await db(_state)([message.pk]) == {message.pk: Status.DELIVERED}


@async_test
@pytest.mark.parametrize("kind", ["ack", "read"])
@pytest.mark.parametrize(
    "message_ids",
    ["missing", None, "a-single-id", {"id": 1}, 5, [], "too-many"],
    ids=["missing", "null", "string", "object", "number", "empty", "over-limit"],
)
async def test_receipt_without_a_valid_id_list_is_an_error_and_the_socket_stays_open(
    kind, message_ids, sender, mobile_user, mobile_token, redis
):
    message = await db(_send)(sender, mobile_user)
    frame: dict = {"type": kind}
    if message_ids == "too-many":
        # The message's own id is in the list: an oversized frame must act on none of it.
        frame["message_ids"] = [str(message.pk)] + [str(uuid.uuid4()) for _ in range(MAX_IDS_PER_FRAME)]
    elif message_ids == "a-single-id":
        frame["message_ids"] = str(message.pk)
    elif message_ids != "missing":
        frame["message_ids"] = message_ids
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await send_frame(ws, frame)
        error = await receive(ws)
        assert (error["type"], error["code"]) == ("error", "invalid_frame")
        assert isinstance(error["detail"], str) and error["detail"]
        await round_trip(ws)
        assert await db(_state)([message.pk]) == {message.pk: Status.SENT}


@async_test
async def test_receipt_with_exactly_the_maximum_number_of_ids_is_accepted(
    sender, mobile_user, mobile_token, redis
):
    message = await db(_send)(sender, mobile_user)
    ids = [str(message.pk)] + [str(uuid.uuid4()) for _ in range(MAX_IDS_PER_FRAME - 1)]
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await send_frame(ws, {"type": "ack", "message_ids": ids})
        await round_trip(ws)
    assert await db(_state)([message.pk]) == {message.pk: Status.DELIVERED}


BAD_FRAMES = [
    pytest.param("this is not json", "invalid_json", id="not-json"),
    pytest.param('{"type": "ping"', "invalid_json", id="truncated-json"),
    pytest.param("[" * 100_000, "invalid_json", id="nested-too-deep"),
    pytest.param('[{"type": "ping"}]', "invalid_frame", id="array"),
    pytest.param('"ping"', "invalid_frame", id="string"),
    pytest.param("42", "invalid_frame", id="number"),
    pytest.param("null", "invalid_frame", id="null"),
    pytest.param("{}", "invalid_frame", id="no-type"),
    pytest.param('{"type": 5}', "invalid_frame", id="type-not-string"),
    pytest.param('{"type": "launch"}', "unknown_type", id="unknown-type"),
    pytest.param('{"type": "PING"}', "unknown_type", id="type-is-case-sensitive"),
    pytest.param(
        json.dumps(
            {
                "type": "chat.send",
                "conversation_id": 1,
                "content": "hi",
                "content_type": "text",
                "client_id": "c1",
            }
        ),
        "invalid_frame",
        id="chat-send",
    ),
    pytest.param('{"type": "typing", "conversation_id": 1, "is_typing": true}', "invalid_frame", id="typing"),
]


@async_test
@pytest.mark.parametrize(("text", "code"), BAD_FRAMES)
async def test_bad_frame_gets_an_error_frame_and_the_socket_stays_usable(
    text, code, sender, mobile_user, mobile_token, redis
):
    message = await db(_send)(sender, mobile_user)
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await ws.send_to(text_data=text)
        error = await receive(ws)
        # A chat.send's error also names its client_id, so the client can match it.
        assert set(error) - {"client_id"} == {"type", "code", "detail"}
        assert (error["type"], error["code"]) == ("error", code)
        await round_trip(ws)
        # Still fully usable: an ack after the error is applied.
        await send_frame(ws, {"type": "ack", "message_ids": [str(message.pk)]})
        await round_trip(ws)
    assert await db(_state)([message.pk]) == {message.pk: Status.DELIVERED}


@async_test
async def test_binary_frame_gets_an_error_frame_and_the_socket_stays_usable(mobile_user, mobile_token, redis):
    async with mobile_socket(mobile_token) as ws:
        await ws.send_to(bytes_data=json.dumps({"type": "ping"}).encode())
        error = await receive(ws)
        assert (error["type"], error["code"]) == ("error", "invalid_frame")
        await round_trip(ws)


@async_test
async def test_many_bad_frames_in_a_row_leave_the_connection_open(mobile_user, mobile_token, redis):
    async with mobile_socket(mobile_token) as ws:
        for param in BAD_FRAMES:
            await ws.send_to(text_data=param.values[0])
        codes = [(await receive(ws))["code"] for _ in BAD_FRAMES]
        assert codes == [param.values[1] for param in BAD_FRAMES]
        await round_trip(ws)
        assert await db(presence.is_online)(Party.mobile(mobile_user.pk))


# --- closing --------------------------------------------------------------------------------


@async_test
async def test_closing_the_last_connection_releases_unacked_messages_to_pending(
    sender, mobile_user, mobile_token, redis
):
    acked, unacked = await db(_send_many)(sender, mobile_user, 2)
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 2)
        await send_frame(ws, {"type": "ack", "message_ids": [str(acked.pk)]})
        await round_trip(ws)
    assert not await db(presence.is_online)(Party.mobile(mobile_user.pk))
    assert await db(_state)([acked.pk, unacked.pk]) == {
        acked.pk: Status.DELIVERED,
        unacked.pk: Status.PENDING,
    }
    released = await db(_fresh)(unacked.pk)
    assert released.next_attempt_at is None
    assert await db(_attempts)(unacked.pk) == [(Channel.WEBSOCKET, Outcome.OFFLINE, "connection closed")]
    assert await db(_attempts)(acked.pk) == [(Channel.WEBSOCKET, Outcome.ACKED, "")]
    assert await db(_attempt_count)() == 2


@async_test
async def test_closing_one_of_two_connections_keeps_messages_in_flight(
    sender, mobile_user, mobile_token, redis
):
    message = await db(_send)(sender, mobile_user)
    async with mobile_socket(mobile_token) as phone:
        await receive_messages(phone, 1)
        async with mobile_socket(mobile_token) as tablet:
            await receive_messages(tablet, 1)
        assert await db(presence.is_online)(Party.mobile(mobile_user.pk))
        assert await db(_state)([message.pk]) == {message.pk: Status.SENT}
        assert [a[1] for a in await db(_attempts)(message.pk)] == [Outcome.SENT, Outcome.SENT]
        # The remaining connection still acks normally.
        await send_frame(phone, {"type": "ack", "message_ids": [str(message.pk)]})
        await round_trip(phone)
    assert await db(_state)([message.pk]) == {message.pk: Status.DELIVERED}


@async_test
async def test_closing_releases_only_the_closing_users_messages(
    sender, mobile_user, mobile_token, stranger, stranger_token, redis
):
    mine = await db(_send)(sender, mobile_user)
    theirs = await db(_send)(sender, stranger)
    async with mobile_socket(stranger_token) as strangers:
        await receive_messages(strangers, 1)
        async with mobile_socket(mobile_token) as ws:
            await receive_messages(ws, 1)
        assert await db(_state)([mine.pk, theirs.pk]) == {mine.pk: Status.PENDING, theirs.pk: Status.SENT}


@async_test
async def test_a_frame_for_a_client_that_has_just_gone_is_dropped_and_other_errors_still_raise():
    # A handler that awaited (the catch-up before a pong, the database before chat.accepted)
    # may answer after its client closed; daphne's autobahn then raises Disconnected.
    sent = []

    async def closed(message):
        sent.append(message["type"])
        raise Disconnected("Attempt to send on a closed protocol")

    send = sends_dropped_after_close(closed)
    await send({"type": "websocket.send", "text": '{"type": "pong"}'})  # dropped, not raised
    assert sent == ["websocket.send"]
    with pytest.raises(Disconnected):  # anything but a frame still says so
        await send({"type": "websocket.close", "code": 1000})

    async def broken(message):
        raise ValueError("not a disconnect")

    with pytest.raises(ValueError):
        await sends_dropped_after_close(broken)({"type": "websocket.send", "text": "{}"})
