"""Hostile input on the WebSockets, through the real ASGI application and Redis channel layer.

Every case is answered with an `error` frame (the connection stays usable) or a clean close,
never a crash, and nothing is stored or relayed for a refused frame: malformed and ill-typed
frames, oversized frames, receipts naming too many ids, floods (`rate_limited`, then
4429), the mobile users' chat send limit (shared with REST), and typing into a conversation
closed while the socket is open. tests/e2e/test_hostile.py shows the frame limit on real daphne.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from django.utils import timezone

from apps.accounts.services import token_create
from apps.conversations.models import ConversationStatus
from apps.conversations.services import conversation_close
from apps.messaging import flow, services
from apps.messaging.models import Message, Status
from apps.realtime.consumers import CLOSE_FLOODING, MAX_IDS_PER_FRAME
from tests.conftest import client_for

from .conftest import (
    QUIET,
    TIMEOUT,
    async_test,
    db,
    mobile_socket,
    receive,
    receive_messages,
    round_trip,
    send_frame,
)

pytestmark = pytest.mark.django_db(transaction=True)

BUSINESS_PATH = "/ws/business/"


@pytest.fixture
def sender_token(sender) -> str:
    return token_create(owner=sender)


def business_socket(token: str):
    return mobile_socket(token, path=BUSINESS_PATH)


# --- helpers (run in the database thread through `db`) --------------------------------------


def _send(sender, recipient) -> Message:
    return services.message_send(sender=sender, recipient_phone_number=recipient.phone_number, content="hi")


def _state(message_id) -> tuple[str, object, object]:
    m = Message.objects.get(pk=message_id)
    return m.status, m.delivered_at, m.read_at


def _chat_count() -> int:
    return Message.objects.filter(conversation__isnull=False).count()


def _chat(conversation, content: object = "hello", client_id: object = "c1", **fields) -> dict:
    return {
        "type": "chat.send",
        "conversation_id": str(conversation.pk),
        "content": content,
        "client_id": client_id,
        **fields,
    }


def _typing(conversation, is_typing: bool = True) -> dict:
    return {"type": "typing", "conversation_id": str(conversation.pk), "is_typing": is_typing}


async def refused(ws, frame: object, code: str) -> dict:
    """Send `frame` (a dict, or raw text), assert the answer is an `error` with `code`."""
    await _send_raw(ws, frame)
    error = await receive(ws)
    assert (error["type"], error["code"]) == ("error", code), error
    assert isinstance(error["detail"], str) and error["detail"]
    return error


async def _send_raw(ws, frame: object) -> None:
    """Send raw text as is (even empty, which the communicator's send_to refuses), else JSON."""
    if isinstance(frame, str):
        await ws.send_input({"type": "websocket.receive", "text": frame})
    else:
        await send_frame(ws, frame)


async def closed_with(ws) -> int:
    """Return the close code the server sent next (asserting it is a close)."""
    async with asyncio.timeout(TIMEOUT):
        output = await ws.receive_output(timeout=None)
    assert output["type"] == "websocket.close", output
    return output["code"]


# --- malformed and ill-typed frames ---------------------------------------------------------

# Each is answered with an error frame of this code, and the socket stays usable.
HOSTILE_FRAMES = [
    pytest.param("", "invalid_json", id="empty"),
    pytest.param("\x00", "invalid_json", id="nul"),
    pytest.param("9" * 5000, "invalid_json", id="int-too-long-to-parse"),
    pytest.param('{"type": "ping", "type": 1}', "invalid_frame", id="duplicate-key-last-wins"),
    pytest.param('{"type": "ping"} {"type": "ping"}', "invalid_json", id="two-objects"),
    pytest.param('{"type": ["ping"]}', "invalid_frame", id="type-list"),
    pytest.param('{"type": "ack", "message_ids": NaN}', "invalid_frame", id="ids-nan"),
    pytest.param('{"type": "ack", "message_ids": [Infinity, -0.0, 1e400]}', None, id="ids-odd-numbers"),
    pytest.param('{"type": "ack", "message_ids": [[[[[]]]]]}', None, id="ids-nested"),
    pytest.param(
        '{"type": "typing", "conversation_id": ["x"], "is_typing": true}',
        "invalid_frame",
        id="typing-id-list",
    ),
    pytest.param(
        '{"type": "typing", "conversation_id": null, "is_typing": true}', "invalid_frame", id="typing-id-null"
    ),
    pytest.param('{"type": "typing", "is_typing": 1}', "invalid_frame", id="typing-missing-id"),
    pytest.param('{"type": "chat.send"}', "invalid_frame", id="chat-empty"),
    pytest.param('{"type": "chat.send", "client_id": {"a": 1}}', "invalid_frame", id="chat-client-id-object"),
    pytest.param(
        '{"type": "chat.send", "client_id": "' + "c" * 101 + '"}', "invalid_frame", id="chat-client-id-long"
    ),
    pytest.param('{"type": "' + "x" * 10_000 + '"}', "unknown_type", id="type-long"),
    pytest.param('{"type": "__init__"}', "unknown_type", id="type-dunder"),
    pytest.param('{"type": "receive_json"}', "unknown_type", id="type-method-name"),
]


@async_test
@pytest.mark.parametrize(("text", "code"), HOSTILE_FRAMES)
async def test_hostile_frame_gets_an_error_or_nothing_and_the_socket_stays_usable(
    text, code, sender, mobile_user, mobile_token, redis
):
    message = await db(_send)(sender, mobile_user)
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        if code is None:  # receipts: ids that are no ids are ignored silently
            await _send_raw(ws, text)
        else:
            await refused(ws, text, code)
        await round_trip(ws)
        assert await db(_state)(message.pk) == (Status.SENT, None, None)
        await send_frame(ws, {"type": "ack", "message_ids": [str(message.pk)]})
        await round_trip(ws)
    assert (await db(_state)(message.pk))[0] == Status.DELIVERED


@async_test
@pytest.mark.parametrize(
    ("fields", "code"),
    [
        pytest.param({"content": {"nested": [1, 2]}}, "invalid_frame", id="content-object"),
        pytest.param({"content": ["a"]}, "invalid_frame", id="content-list"),
        pytest.param({"content": 5}, "invalid_frame", id="content-number"),
        pytest.param({"content": None}, "invalid_frame", id="content-null"),
        pytest.param({"content": "x" * 10_001}, "invalid_frame", id="content-too-long"),
        pytest.param({"content": "a\x00b"}, "invalid_frame", id="content-nul"),
        pytest.param({"content": "\ud800"}, "invalid_frame", id="content-lone-surrogate"),
        pytest.param({"content_type": "json", "content": "{"}, "invalid_frame", id="json-content-not-json"),
        pytest.param({"content_type": "xml"}, "invalid_frame", id="content-type-unknown"),
        pytest.param({"attachment_ids": "not-a-list"}, "invalid_frame", id="attachments-string"),
        pytest.param(
            {"attachment_ids": [str(uuid.uuid4()) for _ in range(1000)]},
            "invalid_frame",
            id="attachments-1000",
        ),
        pytest.param({"attachment_ids": [{"id": 1}]}, "invalid_frame", id="attachments-objects"),
        pytest.param({"conversation_id": "' OR 1=1 --"}, "invalid_frame", id="conversation-id-injection"),
        pytest.param({"conversation_id": 12}, "invalid_frame", id="conversation-id-number"),
        pytest.param({"conversation_id": str(uuid.uuid4())}, "not_found", id="conversation-unknown"),
    ],
)
async def test_ill_typed_chat_send_is_refused_and_stores_nothing(
    fields, code, mobile_token, conversation, redis
):
    async with mobile_socket(mobile_token) as ws:
        error = await refused(ws, _chat(conversation, **fields), code)
        assert error["client_id"] == "c1"
        await round_trip(ws)
    assert await db(_chat_count)() == 0


@async_test
async def test_binary_garbage_gets_an_error_frame(mobile_token, redis):
    async with mobile_socket(mobile_token) as ws:
        await ws.send_to(bytes_data=b"\xff\xfe\x00" * 100)
        error = await receive(ws)
        assert (error["type"], error["code"]) == ("error", "invalid_frame")
        await round_trip(ws)


# --- size limits ------------------------------------------------------------------------------


@async_test
@pytest.mark.parametrize("kind", ["ack", "read"])
async def test_receipt_with_5000_ids_is_refused_whole(kind, sender, mobile_user, mobile_token, redis):
    assert MAX_IDS_PER_FRAME < 5000
    message = await db(_send)(sender, mobile_user)
    # Short junk ids, so that the frame is within the size limit and only the count is wrong.
    ids = [str(message.pk), *range(4999)]
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        error = await refused(ws, {"type": kind, "message_ids": ids}, "invalid_frame")
        assert f"{MAX_IDS_PER_FRAME}" in error["detail"]
        await round_trip(ws)
        # Not one of the ids was acted on, not even the client's own message.
        assert await db(_state)(message.pk) == (Status.SENT, None, None)


@async_test
async def test_receipt_of_5000_uuids_is_past_the_frame_limit_and_refused_whole(
    sender, mobile_user, mobile_token, redis
):
    message = await db(_send)(sender, mobile_user)
    ids = [str(message.pk)] + [str(uuid.uuid4()) for _ in range(4999)]
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        await refused(ws, {"type": "ack", "message_ids": ids}, "frame_too_large")
        await round_trip(ws)
        assert await db(_state)(message.pk) == (Status.SENT, None, None)


@async_test
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
async def test_a_frame_over_the_limit_is_refused_and_the_socket_stays_usable(
    binary, settings, sender, mobile_user, mobile_token, redis
):
    settings.REALTIME_MAX_FRAME_BYTES = 4096
    message = await db(_send)(sender, mobile_user)
    big = json.dumps({"type": "ack", "message_ids": [str(message.pk)], "pad": "x" * 5000})
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        # Just under the limit is an ordinary frame.
        await send_frame(ws, {"type": "ping", "pad": "x" * 4000})
        assert await receive(ws) == {"type": "pong"}
        if binary:
            await ws.send_to(bytes_data=big.encode())
        else:
            await ws.send_to(text_data=big)
        error = await receive(ws)
        assert (error["type"], error["code"]) == ("error", "frame_too_large")
        assert "4,096" in error["detail"]
        await round_trip(ws)
        # The oversized ack was not acted on.
        assert await db(_state)(message.pk) == (Status.SENT, None, None)


@async_test
async def test_the_frame_limit_counts_bytes_not_characters(settings, mobile_token, redis):
    settings.REALTIME_MAX_FRAME_BYTES = 4096
    async with mobile_socket(mobile_token) as ws:
        # 3,000 characters, but 6,000 bytes of UTF-8 on the wire.
        await ws.send_to(text_data=json.dumps({"type": "ping", "pad": "\u00e9" * 3000}, ensure_ascii=False))
        assert (await receive(ws))["code"] == "frame_too_large"
        await round_trip(ws)


def test_the_largest_valid_chat_send_fits_the_default_frame_limit(settings):
    # 10,000 characters outside the BMP, escaped as surrogate pairs by an ASCII-only encoder.
    frame = {
        "type": "chat.send",
        "conversation_id": str(uuid.uuid4()),
        "content": "\U0001f600" * 10_000,
        "content_type": "text",
        "client_id": "c" * 100,
        "attachment_ids": [str(uuid.uuid4()) for _ in range(5)],
    }
    assert len(json.dumps(frame, ensure_ascii=True).encode()) <= settings.REALTIME_MAX_FRAME_BYTES
    # And a receipt of the most ids allowed.
    ack = {"type": "ack", "message_ids": [str(uuid.uuid4()) for _ in range(MAX_IDS_PER_FRAME)]}
    assert len(json.dumps(ack).encode()) <= settings.REALTIME_MAX_FRAME_BYTES


def test_web_passes_the_same_frame_limit_to_daphne(settings, monkeypatch):
    from messaging_project import web

    assert settings.REALTIME_MAX_FRAME_BYTES == web.MAX_FRAME_BYTES_DEFAULT
    # daphne's hard cap is above the limit the consumer answers, never below.
    monkeypatch.setenv("REALTIME_MAX_FRAME_BYTES", "1000")
    assert web._frame_limits() == [
        "--websocket-max-message-size",
        "4000",
        "--websocket-max-frame-size",
        "4000",
    ]


# --- floods ---------------------------------------------------------------------------------


@pytest.fixture
def tight_frame_limits(settings):
    """A burst of 10 frames, (almost) never refilled; the 5th refusal within 10 s closes."""
    settings.REALTIME_FRAME_BURST = 10
    settings.REALTIME_FRAMES_PER_SECOND = 0.01
    settings.REALTIME_FLOOD_CLOSE_AFTER = 5
    return settings


FLOODS = {
    "ping": {"type": "ping"},
    "ack": "ack",
    "typing": "typing",
    "garbage": "not json",
}


async def _until_pong(ws) -> list[dict]:
    """Return the frames that arrive before the next pong (consumed too)."""
    frames = []
    while (frame := await receive(ws)) != {"type": "pong"}:
        frames.append(frame)
    return frames


@async_test
@pytest.mark.parametrize("flood", sorted(FLOODS))
async def test_a_flood_is_answered_rate_limited_and_then_closed_with_4429(
    flood, tight_frame_limits, sender, sender_token, mobile_user, mobile_token, conversation, redis
):
    message = await db(_send)(sender, mobile_user)
    frame = {
        "ack": {"type": "ack", "message_ids": [str(message.pk)]},
        "typing": _typing(conversation, True),
    }.get(flood, FLOODS[flood])
    async with business_socket(sender_token) as desk:
        ws = await _connected(mobile_token)
        await receive_messages(ws, 1)
        # Nine frames and a ping spend the burst; each is handled as usual.
        for _ in range(9):
            await _send_raw(ws, frame)
        await send_frame(ws, {"type": "ping"})
        if flood == "ping":
            assert [await receive(ws) for _ in range(10)] == [{"type": "pong"}] * 10
            answers = []
        else:
            answers = await _until_pong(ws)
        if flood == "garbage":
            assert [a["code"] for a in answers] == ["invalid_json"] * 9
        else:
            assert answers == []
        assert await ws.receive_nothing(QUIET)
        # Past the burst: dropped with `rate_limited` (whatever the frame), then closed.
        for _ in range(4):
            error = await refused(ws, frame, "rate_limited")
            assert isinstance(error["retry_after"], int) and error["retry_after"] >= 1
        await _send_raw(ws, frame)  # the 5th refusal within 10 s
        assert await closed_with(ws) == CLOSE_FLOODING
        await ws.disconnect(timeout=TIMEOUT)
        relayed = await _drain(desk)
    # Typing went through once (repeats of one state are folded); nothing refused was relayed.
    assert relayed == ([_typing(conversation, True)] if flood == "typing" else [])
    if flood == "ack":
        assert (await db(_state)(message.pk))[0] == Status.DELIVERED


async def _connected(token: str):
    from .conftest import communicator

    ws = communicator(token)
    connected, _ = await ws.connect(timeout=TIMEOUT)
    assert connected
    return ws


async def _drain(ws) -> list[dict]:
    frames = []
    while not await ws.receive_nothing(QUIET):
        frames.append(await receive(ws))
    return frames


@async_test
async def test_the_frame_budget_refills_and_a_refused_ack_changes_nothing(
    settings, sender, mobile_user, mobile_token, redis
):
    settings.REALTIME_FRAME_BURST = 3
    settings.REALTIME_FRAMES_PER_SECOND = 1
    settings.REALTIME_FLOOD_CLOSE_AFTER = 50
    message = await db(_send)(sender, mobile_user)
    async with mobile_socket(mobile_token) as ws:
        await receive_messages(ws, 1)
        for _ in range(3):
            await send_frame(ws, {"type": "ping"})
        for _ in range(3):
            assert await receive(ws) == {"type": "pong"}
        await refused(ws, {"type": "ack", "message_ids": [str(message.pk)]}, "rate_limited")
        assert await db(_state)(message.pk) == (Status.SENT, None, None)
        await asyncio.sleep(2.2)  # two frames' worth
        await send_frame(ws, {"type": "ack", "message_ids": [str(message.pk)]})
        await round_trip(ws)
    assert (await db(_state)(message.pk))[0] == Status.DELIVERED


def test_default_frame_limits_admit_a_client_acking_a_catch_up_chunk_frame_by_frame(settings):
    # One ack frame per message of a full catch-up chunk never meets `rate_limited`.
    assert settings.REALTIME_FRAME_BURST >= settings.MESSAGING_CATCHUP_CHUNK
    assert settings.REALTIME_FRAMES_PER_SECOND >= 100


# --- the mobile users' chat send limit ------------------------------------------------------


@pytest.fixture
def mobile_limit_of_two(settings):
    settings.MESSAGING_RATE_LIMITS_ENABLED = True
    settings.MESSAGING_MOBILE_SENDS_PER_MINUTE = 2
    settings.MESSAGING_MOBILE_SENDS_PER_HOUR = 1000
    return settings


@async_test
async def test_mobile_chat_send_over_the_socket_is_rate_limited_with_retry_after(
    mobile_limit_of_two, mobile_token, conversation, redis
):
    async with mobile_socket(mobile_token) as ws:
        for n in range(2):
            await send_frame(ws, _chat(conversation, client_id=f"ok{n}"))
            assert (await receive(ws))["type"] == "chat.accepted"
        error = await refused(ws, _chat(conversation, client_id="third"), "rate_limited")
        assert error["client_id"] == "third"
        assert isinstance(error["retry_after"], int) and 1 <= error["retry_after"] <= 60
        await round_trip(ws)
    assert await db(_chat_count)() == 2


@pytest.mark.usefixtures("mobile_limit_of_two")
def test_mobile_chat_send_over_rest_is_rate_limited_and_shares_the_socket_budget(
    mobile_user, conversation, redis
):
    client = client_for(mobile_user)
    url = f"/api/v1/conversations/{conversation.pk}/messages/"
    for _ in range(2):
        assert client.post(url, {"content": "hi"}, format="json").status_code == 202
    response = client.post(url, {"content": "hi"}, format="json")
    assert response.status_code == 429
    assert response.json()["detail"]
    assert 1 <= int(response["Retry-After"]) <= 60
    assert Message.objects.filter(conversation=conversation).count() == 2

    # The socket draws on the same budget.
    token = token_create(owner=mobile_user)

    async def over_the_socket() -> dict:
        async with mobile_socket(token) as ws:
            await send_frame(ws, _chat(conversation))
            return await receive(ws)

    from asgiref.sync import async_to_sync

    answer = async_to_sync(over_the_socket)()
    assert (answer["type"], answer["code"]) == ("error", "rate_limited")
    assert Message.objects.filter(conversation=conversation).count() == 2


def test_the_mobile_limit_is_per_mobile_user(
    mobile_limit_of_two, sender, mobile_user, stranger, conversation, redis
):
    from tests.factories import ConversationFactory

    theirs = ConversationFactory(business=sender, mobile=stranger)
    mine, other = client_for(mobile_user), client_for(stranger)
    for _ in range(2):
        assert (
            mine.post(f"/api/v1/conversations/{conversation.pk}/messages/", {"content": "a"}).status_code
            == 202
        )
    assert (
        mine.post(f"/api/v1/conversations/{conversation.pk}/messages/", {"content": "a"}).status_code == 429
    )
    assert other.post(f"/api/v1/conversations/{theirs.pk}/messages/", {"content": "b"}).status_code == 202


def test_mobile_chat_send_is_refused_while_overloaded(settings, mobile_user, conversation, redis):
    settings.MESSAGING_BACKLOG_LIMIT = 0
    settings.MESSAGING_BACKLOG_CACHE_SECONDS = 0
    flow.backlog_cache_clear()
    _send(conversation.business, mobile_user)  # a backlog of one (the test relay may deliver it)
    Message.objects.update(status=Status.QUEUED, next_attempt_at=timezone.now())
    try:
        response = client_for(mobile_user).post(
            f"/api/v1/conversations/{conversation.pk}/messages/", {"content": "hi"}, format="json"
        )
    finally:
        flow.backlog_cache_clear()
    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    assert Message.objects.filter(conversation=conversation).count() == 0


# --- typing into a closed conversation --------------------------------------------------------


@async_test
@pytest.mark.parametrize("closer", ["business", "mobile"])
async def test_typing_stops_at_once_when_the_conversation_is_closed_while_the_socket_is_open(
    closer, sender_token, mobile_token, conversation, redis
):
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        # Relayed while open (so any per-connection memory of the membership is warm).
        await send_frame(phone, _typing(conversation, True))
        assert await receive(desk) == _typing(conversation, True)
        participant = conversation.business if closer == "business" else conversation.mobile
        await db(conversation_close)(conversation_id=conversation.pk, participant=participant)

        # A change of state and a repeat of the last one: both refused, neither relayed.
        await refused(phone, _typing(conversation, False), "conversation_closed")
        await refused(phone, _typing(conversation, True), "conversation_closed")
        await refused(desk, _typing(conversation, True), "conversation_closed")
        assert await desk.receive_nothing(QUIET)
        assert await phone.receive_nothing(QUIET)
        # The chat is read-only too.
        await refused(phone, _chat(conversation), "conversation_closed")
    assert await db(_chat_count)() == 0
    assert (await db(lambda: type(conversation).objects.get(pk=conversation.pk).status)()) == (
        ConversationStatus.CLOSED
    )
