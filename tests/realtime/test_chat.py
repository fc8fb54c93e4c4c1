"""Chat over the WebSockets through the real ASGI application and Redis channel layer.

SPEC.md section 3 "Mobile WebSocket" and "Business WebSocket": `chat.send` answered with
`chat.accepted`, the other participant's `message` frame, `status` frames for the author as
the recipient acks and reads, `typing` relayed to the other participant only, error frames
that leave the connection open, and the business user's catch-up on connect.
"""

from __future__ import annotations

import io
import uuid
from datetime import datetime

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from apps.accounts import presence
from apps.accounts.models import PartyKind, User
from apps.accounts.party import Party
from apps.accounts.services import token_create
from apps.conversations.models import Conversation, ConversationStatus
from apps.conversations.services import conversation_close, conversation_message_send
from apps.media.services import media_upload
from apps.messaging import flow, services
from apps.messaging.content import MAX_CONTENT_LENGTH
from apps.messaging.frames import message_payload
from apps.messaging.models import Kind, Message, Status
from apps.messaging.selectors import with_parties
from apps.realtime.consumers import TYPING_BURST
from tests.factories import ConversationFactory, SenderFactory

from .conftest import (
    QUIET,
    assert_closed_unauthenticated,
    async_test,
    communicator,
    db,
    mobile_socket,
    receive,
    receive_messages,
    round_trip,
    send_frame,
)

pytestmark = pytest.mark.django_db(transaction=True)

BUSINESS_PATH = "/ws/business/"
# One media id written two ways: the same UUID, so a duplicate.
SAME_ID_TWICE = ["9c1f0a64-3a43-4c8e-9a57-0d2b8f1e6a10", "9C1F0A64-3A43-4C8E-9A57-0D2B8F1E6A10"]


def business_socket(token: str):
    """Connect /ws/business/ like `mobile_socket` connects /ws/mobile/."""
    return mobile_socket(token, path=BUSINESS_PATH)


@pytest.fixture
def sender_token(sender) -> str:
    return token_create(owner=sender)


@pytest.fixture
def other_sender_token(other_sender) -> str:
    return token_create(owner=other_sender)


# --- helpers (run in the database thread through `db`) --------------------------------------


def _chat(conversation, content: str = "hello", client_id: str | None = "c1", **fields) -> dict:
    return {
        "type": "chat.send",
        "conversation_id": str(conversation.pk),
        "content": content,
        "client_id": client_id,
        **fields,
    }


async def chat_send(ws, conversation, content: str = "hello", **fields) -> dict:
    """Send a `chat.send` frame and return the answer (chat.accepted or an error)."""
    await send_frame(ws, _chat(conversation, content, **fields))
    return await receive(ws)


async def accepted(ws, conversation, content: str = "hello", **fields) -> dict:
    """Send a chat message and return its M object, asserting it was accepted."""
    answer = await chat_send(ws, conversation, content, **fields)
    assert answer["type"] == "chat.accepted", answer
    return answer["message"]


async def receive_status(ws) -> tuple[str, str]:
    """Return (message id, status) of the next frame, asserting it is a well-formed `status` frame."""
    frame = await receive(ws)
    assert set(frame) == {"type", "message_id", "status", "at"}, frame
    assert frame["type"] == "status"
    assert datetime.fromisoformat(frame["at"]).tzinfo is not None
    return frame["message_id"], frame["status"]


def _message(message_id) -> Message:
    return Message.objects.get(pk=message_id)


def _payload(message_id) -> dict:
    return message_payload(with_parties(Message.objects.filter(pk=message_id)).get())


def _statuses(message_ids) -> list[str]:
    by_id = dict(Message.objects.filter(pk__in=list(message_ids)).values_list("pk", "status"))
    return [by_id[uuid.UUID(str(pk))] for pk in message_ids]


def _message_count() -> int:
    return Message.objects.count()


def _conversation(conversation_id) -> Conversation:
    return Conversation.objects.get(pk=conversation_id)


def _counters(conversation_id) -> tuple[int, int, uuid.UUID | None, str]:
    c = _conversation(conversation_id)
    return c.unread_business, c.unread_mobile, c.last_message_id, c.status


def _deliver(message_id) -> str:
    return services.message_deliver(message_id=message_id)


def _one_way(sender, recipient) -> Message:
    return services.message_send(sender=sender, recipient_phone_number=recipient.phone_number, content="hi")


def _sender_without_chat() -> User:
    user = SenderFactory()
    user.user_permissions.remove(Permission.objects.get(content_type__app_label="accounts", codename="chat"))
    return user


def _pdf_upload(uploader):
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), "white").save(buffer, "PDF")
    upload = SimpleUploadedFile("invoice.pdf", buffer.getvalue(), content_type="application/pdf")
    return media_upload(uploader=uploader, upload=upload)


# --- connecting -----------------------------------------------------------------------------


@async_test
async def test_business_socket_with_a_sender_token_is_online_and_answers_ping(sender, sender_token, redis):
    async with business_socket(sender_token) as ws:
        await round_trip(ws)
        assert await db(presence.is_online)(Party(PartyKind.BUSINESS, sender.pk))
        # Business and mobile presence are separate: the mobile user with this id is not online.
        assert not await db(presence.is_online)(Party(PartyKind.MOBILE, sender.pk))
    assert not await db(presence.is_online)(Party(PartyKind.BUSINESS, sender.pk))


@async_test
@pytest.mark.parametrize("path", ["/ws/business/", "/ws/mobile/"])
async def test_a_token_of_the_other_kind_is_closed_with_4401(path, sender_token, mobile_token, redis):
    token = mobile_token if path == BUSINESS_PATH else sender_token
    await assert_closed_unauthenticated(communicator(token, path=path))


@async_test
async def test_business_socket_without_a_token_is_closed_with_4401(redis):
    await assert_closed_unauthenticated(communicator(None, path=BUSINESS_PATH))


# --- chat.send, delivery and status frames --------------------------------------------------


@async_test
async def test_mobile_chat_send_is_accepted_stored_and_delivered_to_the_business(
    sender, sender_token, mobile_user, mobile_token, conversation, redis
):
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        answer = await chat_send(phone, conversation, "  Where is my parcel?  ", client_id="local-1")
        assert set(answer) == {"type", "client_id", "message"}
        assert (answer["type"], answer["client_id"]) == ("chat.accepted", "local-1")
        message = answer["message"]
        assert (message["kind"], message["conversation_id"], message["seq"]) == (
            Kind.CHAT,
            str(conversation.pk),
            1,
        )
        assert message["sender"] == {"type": "mobile", "id": mobile_user.pk, "name": mobile_user.display}
        assert (message["content"], message["content_type"], message["attachments"]) == (
            "  Where is my parcel?  ",
            "text",
            [],
        )
        stored = await db(_message)(message["id"])
        assert (
            stored.sender_mobile_id,
            stored.recipient_business_id,
            stored.sender_id,
            stored.recipient_id,
        ) == (
            mobile_user.pk,
            sender.pk,
            None,
            None,
        )
        assert stored.status == Status.QUEUED
        assert await db(_counters)(conversation.pk) == (1, 0, stored.pk, ConversationStatus.ACTIVE)
        assert await db(_message_count)() == 1
        # Nothing reaches the business before a delivery.
        assert await desk.receive_nothing(QUIET)

        assert await db(_deliver)(message["id"]) == "sent"
        assert await receive_messages(desk, 1) == [message]
        assert await receive_status(phone) == (message["id"], Status.SENT)
        assert await phone.receive_nothing(QUIET)  # the author gets no copy of its own message


@async_test
async def test_business_ack_and_read_reach_the_mobile_author_as_status_frames(
    sender, sender_token, mobile_token, conversation, redis
):
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        message = await accepted(phone, conversation)
        await db(_deliver)(message["id"])
        await receive_messages(desk, 1)
        assert await receive_status(phone) == (message["id"], Status.SENT)

        await send_frame(desk, {"type": "ack", "message_ids": [message["id"]]})
        assert await receive_status(phone) == (message["id"], Status.DELIVERED)
        assert (await db(_counters)(conversation.pk))[:2] == (1, 0)  # delivered is still unread

        await send_frame(desk, {"type": "read", "message_ids": [message["id"]]})
        assert await receive_status(phone) == (message["id"], Status.READ)
        assert (await db(_counters)(conversation.pk))[:2] == (0, 0)

        # Receipts are idempotent: repeating them moves nothing and tells the author nothing.
        await send_frame(desk, {"type": "ack", "message_ids": [message["id"]]})
        await send_frame(desk, {"type": "read", "message_ids": [message["id"]]})
        await round_trip(desk)
        assert await phone.receive_nothing(QUIET)
        assert await desk.receive_nothing(QUIET)
    assert await db(_statuses)([message["id"]]) == [Status.READ]
    assert (await db(_counters)(conversation.pk))[:2] == (0, 0)


@async_test
async def test_business_chat_send_reaches_the_mobile_and_its_receipts_reach_the_business(
    sender, sender_token, mobile_user, mobile_token, conversation, redis
):
    # A one-way message first: chat and one-way messages share the mobile user's seq stream.
    await db(services.message_send)(
        sender=sender, recipient_phone_number=mobile_user.phone_number, content="one-way"
    )
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        [one_way] = await receive_messages(phone, 1)
        message = await accepted(desk, conversation, "Tomorrow morning.", client_id="desk-7")
        assert (message["seq"], one_way["seq"]) == (2, 1)
        assert message["sender"] == {"type": "business", "id": sender.pk, "name": sender.name}
        assert (message["kind"], message["conversation_id"]) == (Kind.CHAT, str(conversation.pk))
        assert await db(_counters)(conversation.pk) == (0, 1, uuid.UUID(message["id"]), "active")

        assert await db(_deliver)(message["id"]) == "sent"
        assert await receive_messages(phone, 1) == [message]
        assert await receive_status(desk) == (message["id"], Status.SENT)

        await send_frame(phone, {"type": "ack", "message_ids": [message["id"]]})
        assert await receive_status(desk) == (message["id"], Status.DELIVERED)
        await send_frame(phone, {"type": "read", "message_ids": [message["id"]]})
        assert await receive_status(desk) == (message["id"], Status.READ)
        # The one-way message's receipts are not chat: its sender gets no status frame.
        await send_frame(phone, {"type": "read", "message_ids": [one_way["id"]]})
        await round_trip(phone)
        assert await desk.receive_nothing(QUIET)
    assert await db(_statuses)([message["id"], one_way["id"]]) == [Status.READ, Status.READ]
    assert (await db(_counters)(conversation.pk))[:2] == (0, 0)


@async_test
async def test_status_frames_reach_every_connection_of_the_author_and_nobody_else(
    sender, sender_token, mobile_token, conversation, stranger, other_sender_token, redis
):
    stranger_token = await db(token_create)(owner=stranger)
    async with (
        mobile_socket(mobile_token) as phone,
        mobile_socket(mobile_token) as tablet,
        business_socket(sender_token) as desk,
        business_socket(other_sender_token) as other_desk,
        mobile_socket(stranger_token) as strangers,
    ):
        message = await accepted(phone, conversation)
        await db(_deliver)(message["id"])
        await receive_messages(desk, 1)
        assert await receive_status(phone) == (message["id"], Status.SENT)
        assert await receive_status(tablet) == (message["id"], Status.SENT)
        for ws in (other_desk, strangers, desk):
            assert await ws.receive_nothing(QUIET)


@async_test
async def test_chat_send_into_an_archived_conversation_reactivates_it(
    sender, sender_token, mobile_token, conversation, redis
):
    await db(Conversation.objects.filter(pk=conversation.pk).update)(status=ConversationStatus.ARCHIVED)
    async with mobile_socket(mobile_token) as phone:
        await accepted(phone, conversation)
    assert (await db(_conversation)(conversation.pk)).status == ConversationStatus.ACTIVE


@async_test
async def test_chat_send_with_own_attachment_carries_it_to_the_business(
    settings, tmp_path, sender, sender_token, mobile_user, mobile_token, conversation, redis
):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }
    media = await db(_pdf_upload)(mobile_user)
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        message = await accepted(phone, conversation, "the invoice", attachment_ids=[str(media.pk)])
        [attachment] = message["attachments"]
        assert (attachment["id"], attachment["media_type"], attachment["file_name"]) == (
            str(media.pk),
            "document",
            "invoice.pdf",
        )
        await db(_deliver)(message["id"])
        [received] = await receive_messages(desk, 1)
        assert [a["id"] for a in received["attachments"]] == [str(media.pk)]
        assert await receive_status(phone) == (message["id"], Status.SENT)

        # Attached once: the same media cannot go with another message.
        error = await chat_send(phone, conversation, "again", attachment_ids=[str(media.pk)])
        assert (error["type"], error["code"]) == ("error", "invalid_attachment")
    assert await db(_message_count)() == 1


# --- errors: an error frame, nothing stored, the connection stays open ------------------------


async def assert_refused(ws, frame: dict, code: str) -> dict:
    """Send `frame`, assert the error answer with `code` and that the socket is still usable."""
    await send_frame(ws, frame)
    error = await receive(ws)
    assert (error["type"], error["code"]) == ("error", code), error
    assert isinstance(error["detail"], str) and error["detail"]
    await round_trip(ws)
    return error


@async_test
async def test_chat_send_to_a_closed_conversation_is_refused_and_stores_nothing(
    sender, mobile_user, mobile_token, sender_token, conversation, redis
):
    await db(conversation_close)(conversation_id=conversation.pk, participant=sender)
    before = await db(_counters)(conversation.pk)
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        error = await assert_refused(phone, _chat(conversation, client_id="x-1"), "conversation_closed")
        assert error["client_id"] == "x-1"
        await assert_refused(desk, _chat(conversation), "conversation_closed")
        assert await desk.receive_nothing(QUIET)
    assert await db(_message_count)() == 0
    assert await db(_counters)(conversation.pk) == before
    assert (await db(_conversation)(conversation.pk)).status == ConversationStatus.CLOSED


@async_test
async def test_chat_send_to_a_foreign_or_unknown_conversation_is_not_found(
    sender, other_sender, mobile_user, mobile_token, sender_token, stranger, redis
):
    # Conversations the caller is no participant of: another mobile user's, another business's.
    theirs = await db(ConversationFactory)(business=sender, mobile=stranger)
    other_business = await db(ConversationFactory)(business=other_sender, mobile=mobile_user)
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        await assert_refused(phone, _chat(theirs), "not_found")
        await assert_refused(desk, _chat(other_business), "not_found")
        unknown = {**_chat(theirs), "conversation_id": str(uuid.uuid4())}
        await assert_refused(phone, unknown, "not_found")
        await assert_refused(desk, unknown, "not_found")
    assert await db(_message_count)() == 0
    for c in (theirs, other_business):
        assert await db(_counters)(c.pk) == (0, 0, None, ConversationStatus.ACTIVE)


@async_test
async def test_a_one_way_message_id_cannot_be_answered(
    sender, sender_token, mobile_user, mobile_token, redis
):
    one_way = await db(_one_way)(sender, mobile_user)
    frame = {"type": "chat.send", "conversation_id": str(one_way.pk), "content": "reply", "client_id": "r"}
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        await receive_messages(phone, 1)
        await assert_refused(phone, frame, "not_answerable")
        # The business side has no such conversation either.
        await assert_refused(desk, frame, "not_found")
    assert await db(_message_count)() == 1
    assert await db(Conversation.objects.count)() == 0


@async_test
@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"content": ""}, id="empty"),
        pytest.param({"content": "   \n "}, id="blank"),
        pytest.param({"content": "x" * (MAX_CONTENT_LENGTH + 1)}, id="too-long"),
        pytest.param({"content": None}, id="null"),
        pytest.param({"content": 42}, id="number"),
        pytest.param({"content": "<b></b>"}, id="empty-after-stripping-html"),
        pytest.param({"content_type": "json", "content": "{not json"}, id="json-that-does-not-parse"),
        pytest.param({"content_type": "html"}, id="unknown-content-type"),
        pytest.param({"conversation_id": None}, id="no-conversation"),
        pytest.param({"conversation_id": "not-a-uuid"}, id="conversation-not-uuid"),
        pytest.param({"conversation_id": 7}, id="conversation-number"),
        pytest.param({"client_id": 7}, id="client-id-number"),
        pytest.param({"client_id": "c" * 101}, id="client-id-too-long"),
        pytest.param({"attachment_ids": "a-single-id"}, id="attachments-not-a-list"),
        pytest.param({"attachment_ids": {}}, id="attachments-object"),
        pytest.param({"attachment_ids": ["nope"]}, id="attachment-not-uuid"),
        pytest.param({"attachment_ids": [7]}, id="attachment-number"),
        pytest.param({"attachment_ids": [str(uuid.uuid4()) for _ in range(6)]}, id="six-attachments"),
        pytest.param({"attachment_ids": SAME_ID_TWICE}, id="duplicate-attachment"),
    ],
)
async def test_invalid_chat_send_is_an_invalid_frame_error_and_stores_nothing(
    change, mobile_token, conversation, redis
):
    async with mobile_socket(mobile_token) as phone:
        await assert_refused(phone, {**_chat(conversation), **change}, "invalid_frame")
    assert await db(_message_count)() == 0
    assert await db(_counters)(conversation.pk) == (0, 0, None, ConversationStatus.ACTIVE)


@async_test
async def test_content_of_exactly_the_maximum_length_is_accepted(mobile_token, conversation, redis):
    async with mobile_socket(mobile_token) as phone:
        message = await accepted(phone, conversation, "x" * MAX_CONTENT_LENGTH)
    assert len((await db(_message)(message["id"])).content) == MAX_CONTENT_LENGTH


@async_test
async def test_html_is_stripped_and_json_content_kept(mobile_token, conversation, redis):
    async with mobile_socket(mobile_token) as phone:
        text = await accepted(phone, conversation, "<script>alert(1)</script><b>Hi</b> &amp; bye")
        data = await accepted(phone, conversation, '{"order": 7}', content_type="json")
    assert text["content"] == "Hi & bye"
    assert (data["content"], data["content_type"]) == ('{"order": 7}', "json")


@async_test
async def test_attachments_that_are_not_the_authors_unattached_media_are_refused(
    settings, tmp_path, sender, mobile_token, conversation, redis
):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    }
    businesses = await db(_pdf_upload)(sender)
    async with mobile_socket(mobile_token) as phone:
        for ids in ([str(uuid.uuid4())], [str(businesses.pk)]):
            error = await assert_refused(phone, _chat(conversation, attachment_ids=ids), "invalid_attachment")
            assert error["client_id"] == "c1"
    assert await db(_message_count)() == 0
    assert (await db(_counters)(conversation.pk))[:3] == (0, 0, None)


@async_test
async def test_business_without_the_chat_permission_can_neither_chat_nor_type(mobile_user, redis):
    user = await db(_sender_without_chat)()
    conversation = await db(ConversationFactory)(business=user, mobile=mobile_user)
    token = await db(token_create)(owner=user)
    async with business_socket(token) as desk:
        error = await assert_refused(desk, _chat(conversation, client_id="f"), "forbidden")
        assert error["client_id"] == "f"
        typing = {"type": "typing", "conversation_id": str(conversation.pk), "is_typing": True}
        await assert_refused(desk, typing, "forbidden")
        # Receipts and heartbeats still work on its socket.
        await send_frame(desk, {"type": "ack", "message_ids": [str(uuid.uuid4())]})
        await round_trip(desk)
    assert await db(_message_count)() == 0


@async_test
async def test_business_chat_send_counts_against_the_senders_rate_limit(
    settings, sender, sender_token, conversation, redis
):
    settings.MESSAGING_RATE_LIMITS_ENABLED = True
    [(per_minute, _), *_] = flow.TIER_LIMITS[sender.tier]
    used_up = await db(flow.send_limiter(sender.tier).hit)(str(sender.pk), cost=per_minute)
    assert used_up.allowed
    async with business_socket(sender_token) as desk:
        error = await assert_refused(desk, _chat(conversation, client_id="rl"), "rate_limited")
        assert error["client_id"] == "rl"
        assert isinstance(error["retry_after"], int) and error["retry_after"] >= 1
    assert await db(_message_count)() == 0


@async_test
async def test_business_chat_send_is_refused_while_overloaded(settings, sender_token, conversation, redis):
    settings.MESSAGING_BACKLOG_LIMIT = 0
    settings.MESSAGING_BACKLOG_CACHE_SECONDS = 0
    flow.backlog_cache_clear()
    await db(_one_way)(conversation.business, conversation.mobile)  # a backlog of one
    try:
        async with business_socket(sender_token) as desk:
            error = await assert_refused(desk, _chat(conversation), "overloaded")
            assert error["retry_after"] >= 1
    finally:
        flow.backlog_cache_clear()
    assert await db(_message_count)() == 1


# --- typing ---------------------------------------------------------------------------------


def _typing(conversation, is_typing: bool = True) -> dict:
    return {"type": "typing", "conversation_id": str(conversation.pk), "is_typing": is_typing}


@async_test
async def test_typing_reaches_the_other_participant_only_and_is_not_stored(
    sender_token, mobile_token, conversation, stranger, other_sender, other_sender_token, redis
):
    stranger_token = await db(token_create)(owner=stranger)
    # The stranger and the other business have conversations of their own with these two.
    await db(ConversationFactory)(business=conversation.business, mobile=stranger)
    await db(ConversationFactory)(business=other_sender, mobile=conversation.mobile)
    async with (
        mobile_socket(mobile_token) as phone,
        mobile_socket(mobile_token) as tablet,
        business_socket(sender_token) as desk,
        business_socket(other_sender_token) as other_desk,
        mobile_socket(stranger_token) as strangers,
    ):
        await send_frame(phone, _typing(conversation, True))
        assert await receive(desk) == _typing(conversation, True)
        await send_frame(desk, _typing(conversation, False))
        assert await receive(phone) == _typing(conversation, False)
        assert await receive(tablet) == _typing(conversation, False)

        for ws in (phone, desk):
            await round_trip(ws)  # no echo came before the pong
        # The mobile user's other device is the same participant: it does not hear itself type.
        for ws in (other_desk, strangers, desk, phone, tablet):
            assert await ws.receive_nothing(QUIET)
    assert await db(_message_count)() == 0
    assert await db(_counters)(conversation.pk) == (0, 0, None, ConversationStatus.ACTIVE)


@async_test
async def test_repeated_typing_state_is_relayed_once_and_a_change_always_goes(
    sender_token, mobile_token, conversation, redis
):
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        for _ in range(3):
            await send_frame(phone, _typing(conversation, True))
        await send_frame(phone, _typing(conversation, False))
        await round_trip(phone)
        assert await receive(desk) == _typing(conversation, True)
        assert await receive(desk) == _typing(conversation, False)
        assert await desk.receive_nothing(QUIET)


@async_test
async def test_typing_burst_gets_rate_limited_errors_and_the_socket_stays_open(
    sender_token, mobile_token, conversation, redis
):
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        # Alternating states, so the repeat throttle lets every one of them through.
        for n in range(TYPING_BURST):
            await send_frame(phone, _typing(conversation, n % 2 == 0))
        await round_trip(phone)
        for n in range(TYPING_BURST):
            assert await receive(desk) == _typing(conversation, n % 2 == 0)

        await assert_refused(phone, _typing(conversation, True), "rate_limited")
        assert await desk.receive_nothing(QUIET)
        # Still a working connection: chat goes on.
        await accepted(phone, conversation)


@async_test
async def test_typing_into_a_foreign_or_closed_conversation_is_refused(
    sender, sender_token, mobile_token, conversation, stranger, redis
):
    theirs = await db(ConversationFactory)(business=sender, mobile=stranger)
    # A closed conversation of the same pair (closing frees the pair for `conversation`).
    closed = await db(ConversationFactory)(
        business=sender, mobile=conversation.mobile, status=ConversationStatus.CLOSED
    )
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        await assert_refused(phone, _typing(theirs), "not_found")
        await assert_refused(phone, _typing(closed), "conversation_closed")
        await assert_refused(phone, {**_typing(theirs), "conversation_id": "nope"}, "invalid_frame")
        await assert_refused(phone, {**_typing(conversation), "is_typing": "yes"}, "invalid_frame")
        assert await desk.receive_nothing(QUIET)


# --- business catch-up ----------------------------------------------------------------------


def _send_while_offline(conversation, count: int) -> list[str]:
    ids = []
    for n in range(count):
        message = conversation_message_send(
            conversation_id=conversation.pk, author=conversation.mobile, content=f"while away #{n}"
        )
        assert services.message_deliver(message_id=message.pk) == "offline"
        ids.append(str(message.pk))
    return ids


@async_test
async def test_business_connecting_receives_messages_sent_while_offline_in_seq_order(
    settings, sender, sender_token, mobile_token, conversation, redis
):
    settings.MESSAGING_CATCHUP_CHUNK = 2  # the backlog spans two chunks
    ids = await db(_send_while_offline)(conversation, 3)
    assert await db(_statuses)(ids) == [Status.PENDING] * 3
    async with mobile_socket(mobile_token) as phone, business_socket(sender_token) as desk:
        received = await receive_messages(desk, 3)
        assert await desk.receive_nothing(QUIET)
        assert [(m["id"], m["seq"]) for m in received] == list(zip(ids, [1, 2, 3], strict=True))
        assert received == [await db(_payload)(pk) for pk in ids]
        # The author hears each one went out.
        assert sorted([await receive_status(phone) for _ in ids]) == sorted((pk, Status.SENT) for pk in ids)
        await send_frame(desk, {"type": "ack", "message_ids": ids})
        assert sorted([await receive_status(phone) for _ in ids]) == sorted(
            (pk, Status.DELIVERED) for pk in ids
        )
    assert await db(_statuses)(ids) == [Status.DELIVERED] * 3
    assert await db(_message_count)() == 3


@async_test
async def test_business_disconnect_releases_unacked_chat_messages_for_the_next_connection(
    sender_token, mobile_token, conversation, redis
):
    [pk] = await db(_send_while_offline)(conversation, 1)
    async with business_socket(sender_token) as desk:
        [first] = await receive_messages(desk, 1)
    assert await db(_statuses)([pk]) == [Status.PENDING]
    async with business_socket(sender_token) as desk:
        assert await receive_messages(desk, 1) == [first]
        assert await desk.receive_nothing(QUIET)
