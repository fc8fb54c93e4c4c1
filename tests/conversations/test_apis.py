"""HTTP contract of the conversation endpoints (SPEC.md section 3, "Conversations").

Every request goes through the real API (token auth, permissions, services, PostgreSQL);
setup that is not under test sends through `conversations.services`.
"""

from __future__ import annotations

import uuid
from functools import partial

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from apps.accounts.models import MobileUser, User
from apps.conversations.models import Conversation, ConversationStatus
from apps.conversations.services import conversation_message_send
from apps.messaging.models import Kind, Message, Status
from apps.messaging.services import message_send
from tests.concurrency import run_together
from tests.conftest import client_for
from tests.factories import ConversationFactory, MobileUserFactory, SenderFactory

URL = "/api/v1/conversations/"
UNREAD_URL = f"{URL}unread-count/"
CONVERSATION_FIELDS = {
    "id",
    "status",
    "business",
    "mobile",
    "last_message_at",
    "last_message",
    "unread_count",
}
pytestmark = pytest.mark.django_db


def start(client, phone_number):
    return client.post(URL, {"mobile_phone_number": phone_number}, format="json")


def url_of(conversation, action: str = "") -> str:
    pk = conversation.pk if isinstance(conversation, Conversation) else conversation
    return f"{URL}{pk}/{action + '/' if action else ''}"


def post_message(client, conversation, content="hello", **fields):
    return client.post(url_of(conversation, "messages"), {"content": content, **fields}, format="json")


def say(conversation: Conversation, author, content: str = "hi") -> Message:
    """Send a chat message by service (setup for what is under test)."""
    return conversation_message_send(conversation_id=conversation.pk, author=author, content=content)


def fresh(conversation: Conversation) -> Conversation:
    return Conversation.objects.get(pk=conversation.pk)


def snapshot(conversation: Conversation) -> tuple:
    """Return what a refused send must leave alone: rows, counters, last message, seq streams."""
    row = fresh(conversation)
    return (
        Message.objects.count(),
        row.status,
        row.unread_business,
        row.unread_mobile,
        row.last_message_id,
        row.last_message_at,
        MobileUser.objects.get(pk=row.mobile_id).last_seq,
        User.objects.get(pk=row.business_id).last_seq,
    )


def sender_without(codename: str) -> User:
    user = SenderFactory()
    user.user_permissions.remove(
        Permission.objects.get(content_type__app_label="accounts", codename=codename)
    )
    return user


def ids(response) -> list[str]:
    return [item["id"] for item in response.json()["results"]]


# --- POST conversations/: get-or-create ---------------------------------------------------------


def test_start_creates_a_conversation_with_201_and_its_representation(sender_client, sender, mobile_user):
    response = start(sender_client, mobile_user.phone_number)

    assert response.status_code == 201, response.content
    body = response.json()
    conversation = Conversation.objects.get()
    assert (conversation.business, conversation.mobile) == (sender, mobile_user)
    assert conversation.status == ConversationStatus.ACTIVE
    assert set(body) >= CONVERSATION_FIELDS
    assert body["id"] == str(conversation.pk)
    assert body["status"] == "active"
    assert body["business"] == {"type": "business", "id": sender.pk, "name": sender.name}
    assert body["mobile"] == {
        "type": "mobile",
        "id": mobile_user.pk,
        "name": mobile_user.display,
        "phone_number": mobile_user.phone_number,
    }
    assert (body["last_message"], body["last_message_at"], body["unread_count"]) == (None, None, 0)


def test_start_again_returns_the_open_conversation_with_200_and_no_second_row(sender_client, mobile_user):
    first = start(sender_client, mobile_user.phone_number)
    again = start(sender_client, mobile_user.phone_number)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert Conversation.objects.count() == 1


def test_start_returns_an_archived_conversation_instead_of_opening_another(
    sender_client, conversation, mobile_user
):
    sender_client.post(url_of(conversation, "archive"))

    response = start(sender_client, mobile_user.phone_number)

    assert response.status_code == 200
    assert response.json()["id"] == str(conversation.pk)
    assert response.json()["status"] == "archived"
    assert Conversation.objects.count() == 1


def test_start_normalises_the_phone_number(sender_client, conversation, mobile_user):
    written = f"{mobile_user.phone_number[:2]} {mobile_user.phone_number[2:5]}-{mobile_user.phone_number[5:]}"

    response = start(sender_client, written)

    assert response.status_code == 200, response.content
    assert response.json()["id"] == str(conversation.pk)


def test_two_senders_get_separate_conversations_with_one_mobile_user(
    sender_client, other_sender_client, mobile_user
):
    mine = start(sender_client, mobile_user.phone_number)
    theirs = start(other_sender_client, mobile_user.phone_number)

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert Conversation.objects.count() == 2


@pytest.mark.parametrize("phone", ["4155550100", "+1 555", "not a phone", ""])
def test_start_with_a_malformed_phone_number_is_400_and_creates_nothing(sender_client, phone):
    response = start(sender_client, phone)

    assert response.status_code == 400
    assert "mobile_phone_number" in response.json()
    assert response.json()["detail"]
    assert not Conversation.objects.exists()


def test_start_without_a_phone_number_is_400(sender_client):
    response = sender_client.post(URL, {}, format="json")

    assert response.status_code == 400
    assert "mobile_phone_number" in response.json()
    assert not Conversation.objects.exists()


def test_start_with_an_unknown_phone_number_is_404_naming_it(sender_client):
    response = start(sender_client, "+14155559999")

    assert response.status_code == 404
    assert "+14155559999" in response.json()["detail"]
    assert "mobile user" in response.json()["detail"]
    assert not Conversation.objects.exists()


def test_start_with_an_inactive_mobile_user_is_404(sender_client):
    inactive = MobileUserFactory(is_active=False)

    response = start(sender_client, inactive.phone_number)

    assert response.status_code == 404
    assert not Conversation.objects.exists()


def test_mobile_user_cannot_start_a_conversation(mobile_client, stranger):
    response = start(mobile_client, stranger.phone_number)

    assert response.status_code == 403
    assert response.json()["detail"]
    assert not Conversation.objects.exists()


def test_sender_without_chat_permission_is_refused_everywhere(mobile_user):
    user = sender_without("chat")
    client = client_for(user)
    conversation = ConversationFactory(business=user, mobile=mobile_user)
    before = snapshot(conversation)

    assert start(client, mobile_user.phone_number).status_code == 403
    assert "chat" in start(client, mobile_user.phone_number).json()["detail"]
    assert client.get(URL).status_code == 403
    assert client.get(url_of(conversation)).status_code == 403
    assert post_message(client, conversation).status_code == 403
    assert client.post(url_of(conversation, "close")).status_code == 403
    assert client.get(UNREAD_URL).status_code == 403
    assert Conversation.objects.count() == 1
    assert snapshot(conversation) == before


def test_sender_without_send_message_permission_can_still_chat(mobile_user):
    client = client_for(sender_without("send_message"))

    response = start(client, mobile_user.phone_number)

    assert response.status_code == 201
    assert post_message(client, response.json()["id"]).status_code == 202


@pytest.mark.parametrize(
    ("method", "action"),
    [
        ("post", ""),
        ("get", ""),
        ("get", "detail"),
        ("get", "messages"),
        ("post", "messages"),
        ("post", "read"),
        ("post", "archive"),
        ("post", "close"),
        ("get", "unread-count"),
    ],
)
def test_anonymous_requests_are_401(anonymous_client, conversation, method, action):
    before = snapshot(conversation)
    if action == "unread-count":
        url = UNREAD_URL
    elif action == "detail":
        url = url_of(conversation)
    else:
        url = url_of(conversation, action) if action else URL

    response = getattr(anonymous_client, method)(url, {"content": "x"}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert snapshot(conversation) == before


def test_invalid_token_is_401(conversation):
    client = client_for(conversation.business)
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    assert client.get(URL).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_concurrent_starts_yield_one_conversation():
    sender, mobile = SenderFactory(), MobileUserFactory()
    clients = [client_for(sender), client_for(sender)]

    def start_with(client):
        response = start(client, mobile.phone_number)
        return response.status_code, response.json()["id"]

    results = run_together(*(partial(start_with, client) for client in clients))

    assert sorted(code for code, _ in results) == [200, 201]
    assert len({pk for _, pk in results}) == 1
    assert Conversation.objects.get().pk == uuid.UUID(results[0][1])


def test_after_close_starting_again_opens_a_new_conversation(sender_client, conversation, mobile_user):
    assert sender_client.post(url_of(conversation, "close")).status_code == 200

    response = start(sender_client, mobile_user.phone_number)

    assert response.status_code == 201
    assert response.json()["id"] != str(conversation.pk)
    assert response.json()["status"] == "active"
    assert fresh(conversation).status == ConversationStatus.CLOSED
    assert Conversation.objects.count() == 2
    # ... and the new one is the open one from now on.
    assert start(sender_client, mobile_user.phone_number).json()["id"] == response.json()["id"]


# --- GET conversations/ ------------------------------------------------------------------------


def test_each_side_lists_only_its_own_conversations(
    sender_client, other_sender_client, mobile_client, sender, mobile_user, stranger, conversation
):
    elsewhere = ConversationFactory(business=sender)  # another mobile user
    theirs = ConversationFactory(mobile=mobile_user)  # another business

    assert set(ids(sender_client.get(URL))) == {str(conversation.pk), str(elsewhere.pk)}
    assert set(ids(mobile_client.get(URL))) == {str(conversation.pk), str(theirs.pk)}
    assert other_sender_client.get(URL).json()["count"] == 0
    stranger_list = client_for(stranger).get(URL).json()
    assert (stranger_list["count"], stranger_list["results"]) == (0, [])


def test_list_filters_by_status(sender_client, sender):
    active, archived, closed = (ConversationFactory(business=sender) for _ in range(3))
    sender_client.post(url_of(archived, "archive"))
    sender_client.post(url_of(closed, "close"))

    for conversation, status in [(active, "active"), (archived, "archived"), (closed, "closed")]:
        response = sender_client.get(URL, {"status": status})
        assert response.status_code == 200
        assert ids(response) == [str(conversation.pk)]
        assert response.json()["results"][0]["status"] == status
    assert response.json()["count"] == 1
    assert sender_client.get(URL).json()["count"] == 3


def test_list_with_an_unknown_status_filter_is_400(sender_client, conversation):
    response = sender_client.get(URL, {"status": "deleted"})

    assert response.status_code == 400
    assert "status" in response.json()


def test_list_is_ordered_by_last_message(sender_client, mobile_client, sender, mobile_user, conversation):
    newer = ConversationFactory(business=sender)
    silent = ConversationFactory(business=sender)
    say(conversation, sender, "first")
    say(newer, sender, "second")

    assert ids(sender_client.get(URL)) == [str(newer.pk), str(conversation.pk), str(silent.pk)]

    # Sending into the older conversation (through the API, from the other side) moves it first.
    assert post_message(mobile_client, conversation, "back to you").status_code == 202

    listed = sender_client.get(URL).json()["results"]
    assert [item["id"] for item in listed] == [str(conversation.pk), str(newer.pk), str(silent.pk)]
    assert listed[0]["last_message"]["content"] == "back to you"
    assert listed[0]["last_message"]["sender"]["type"] == "mobile"
    assert listed[2]["last_message"] is None


def test_list_is_paginated(sender_client, sender):
    conversations = [ConversationFactory(business=sender) for _ in range(5)]
    for conversation in conversations:
        say(conversation, sender)

    first = sender_client.get(URL, {"page_size": 2}).json()

    assert set(first) == {"count", "next", "previous", "results"}
    assert (first["count"], len(first["results"]), first["previous"]) == (5, 2, None)
    seen = [item["id"] for item in first["results"]]
    page = first
    while page["next"]:
        page = sender_client.get(page["next"]).json()
        seen += [item["id"] for item in page["results"]]
    assert seen == [str(c.pk) for c in reversed(conversations)]
    assert page["previous"] is not None


def test_list_shows_the_callers_own_unread_count(sender_client, mobile_client, sender, conversation):
    say(conversation, sender, "one")
    say(conversation, sender, "two")
    say(conversation, conversation.mobile, "answer")

    assert sender_client.get(URL).json()["results"][0]["unread_count"] == 1
    assert mobile_client.get(URL).json()["results"][0]["unread_count"] == 2


# --- GET conversations/{id}/ -------------------------------------------------------------------


def test_detail_for_each_participant(sender_client, mobile_client, sender, mobile_user, conversation):
    say(conversation, sender, "first")
    last = say(conversation, sender, "second")

    for client, unread in [(sender_client, 0), (mobile_client, 2)]:
        response = client.get(url_of(conversation))
        assert response.status_code == 200
        body = response.json()
        assert set(body) >= CONVERSATION_FIELDS
        assert body["id"] == str(conversation.pk)
        assert body["status"] == "active"
        assert body["business"]["id"] == sender.pk
        assert body["mobile"]["id"] == mobile_user.pk
        assert body["unread_count"] == unread
        assert body["last_message"]["id"] == str(last.pk)
        assert body["last_message"]["content"] == "second"
        assert body["last_message"]["sender"] == {"type": "business", "id": sender.pk, "name": sender.name}
        assert body["last_message_at"] is not None


def test_detail_of_another_owners_conversation_is_404(other_sender_client, stranger, conversation):
    for client in (other_sender_client, client_for(stranger)):
        response = client.get(url_of(conversation))
        assert response.status_code == 404
        assert response.json()["detail"]


@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "%00"])
@pytest.mark.parametrize("action", ["", "messages", "read", "archive", "close"])
def test_a_non_uuid_id_is_404_not_500(sender_client, conversation, bad_id, action):
    method = sender_client.get if action in ("", "messages") else sender_client.post
    before = snapshot(conversation)

    response = method(url_of(bad_id, action))

    assert response.status_code == 404
    assert snapshot(conversation) == before


def test_an_unknown_uuid_is_404(sender_client):
    assert sender_client.get(url_of(uuid.uuid4())).status_code == 404


# --- POST conversations/{id}/messages/ ---------------------------------------------------------


def test_business_sends_into_the_mobile_users_stream_shared_with_one_way(
    sender_client, sender, mobile_user, conversation
):
    one_way = message_send(sender=sender, recipient_phone_number=mobile_user.phone_number, content="notice")

    response = post_message(sender_client, conversation, "hello there")

    assert response.status_code == 202, response.content
    body = response.json()
    message = Message.objects.get(pk=body["id"])
    assert (body["kind"], message.kind) == ("chat", Kind.CHAT)
    assert body["conversation_id"] == str(conversation.pk)
    assert body["sender"] == {"type": "business", "id": sender.pk, "name": sender.name}
    assert body["seq"] == one_way.seq + 1 == message.seq == 2
    assert (body["content"], body["content_type"], body["status"]) == ("hello there", "text", "queued")
    assert body["attachments"] == []
    assert (message.sender, message.recipient, message.conversation_id) == (
        sender,
        mobile_user,
        conversation.pk,
    )
    assert message.sender_mobile is None and message.recipient_business is None
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 2
    assert User.objects.get(pk=sender.pk).last_seq == 0
    row = fresh(conversation)
    assert (row.last_message_id, row.unread_mobile, row.unread_business) == (message.pk, 1, 0)
    assert row.last_message_at == message.created_at


def test_mobile_user_sends_into_the_business_users_own_stream(
    mobile_client, sender, mobile_user, conversation
):
    message_send(sender=sender, recipient_phone_number=mobile_user.phone_number, content="notice")

    first = post_message(mobile_client, conversation, "question")
    second = post_message(mobile_client, conversation, "another")

    assert (first.status_code, second.status_code) == (202, 202)
    assert [first.json()["seq"], second.json()["seq"]] == [1, 2]
    body = first.json()
    assert body["sender"] == {"type": "mobile", "id": mobile_user.pk, "name": mobile_user.display}
    assert body["conversation_id"] == str(conversation.pk)
    message = Message.objects.get(pk=body["id"])
    assert (message.sender_mobile, message.recipient_business) == (mobile_user, sender)
    assert message.sender is None and message.recipient is None
    assert User.objects.get(pk=sender.pk).last_seq == 2
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 1  # only the one-way message
    row = fresh(conversation)
    assert (row.unread_business, row.unread_mobile) == (2, 0)


def test_html_is_stripped_and_json_content_kept(sender_client, conversation):
    text = post_message(sender_client, conversation, "<b>bold</b> move")
    data = post_message(sender_client, conversation, '{"a": "<b>"}', content_type="json")

    assert text.json()["content"] == "bold move"
    assert (data.status_code, data.json()["content"], data.json()["content_type"]) == (
        202,
        '{"a": "<b>"}',
        "json",
    )


def test_content_of_exactly_10000_characters_is_accepted(sender_client, conversation):
    response = post_message(sender_client, conversation, "x" * 10_000)

    assert response.status_code == 202
    assert len(Message.objects.get().content) == 10_000


@pytest.mark.parametrize(
    "fields",
    [
        {"content": ""},
        {"content": "   \n\t "},
        {"content": "x" * 10_001},
        {"content": "{not json", "content_type": "json"},
        {"content": "<p></p>"},
        {"content": "hi", "content_type": "xml"},
        {"content": "hi", "attachment_ids": ["not-a-uuid"]},
        {"content": "hi", "attachment_ids": [str(uuid.uuid4()) for _ in range(6)]},
        {},
    ],
    ids=[
        "empty",
        "whitespace",
        "too-long",
        "invalid-json",
        "html-only",
        "bad-content-type",
        "bad-attachment",
        "six-attachments",
        "missing",
    ],
)
def test_invalid_message_is_400_and_changes_nothing(sender_client, sender, conversation, fields):
    say(conversation, sender, "earlier")
    before = snapshot(conversation)

    response = sender_client.post(url_of(conversation, "messages"), fields, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert snapshot(conversation) == before


def test_unknown_attachment_is_404_and_changes_nothing(sender_client, sender, conversation):
    say(conversation, sender, "earlier")
    before = snapshot(conversation)

    response = post_message(sender_client, conversation, "see attached", attachment_ids=[str(uuid.uuid4())])

    assert response.status_code == 404
    assert snapshot(conversation) == before


def test_sending_into_another_owners_conversation_is_404_and_changes_nothing(
    other_sender_client, stranger, sender, conversation
):
    say(conversation, sender, "earlier")
    before = snapshot(conversation)

    for client in (other_sender_client, client_for(stranger)):
        response = post_message(client, conversation, "intrusion")
        assert response.status_code == 404
        assert response.json()["detail"]
    assert snapshot(conversation) == before


def test_a_one_way_message_cannot_be_answered(
    sender_client, mobile_client, sender, mobile_user, conversation
):
    one_way = message_send(sender=sender, recipient_phone_number=mobile_user.phone_number, content="notice")
    before = snapshot(conversation)

    for client in (mobile_client, sender_client):
        response = post_message(client, one_way.pk, "answer")
        assert response.status_code == 404
        assert response.json()["detail"]
    assert snapshot(conversation) == before
    assert list(Message.objects.values_list("pk", flat=True)) == [one_way.pk]


def test_sending_into_a_closed_conversation_is_409_and_changes_nothing(
    sender_client, mobile_client, sender, conversation
):
    say(conversation, sender, "earlier")
    sender_client.post(url_of(conversation, "close"))
    before = snapshot(conversation)

    for client in (sender_client, mobile_client):
        response = post_message(client, conversation, "too late")
        assert response.status_code == 409
        assert "closed" in response.json()["detail"]
    assert snapshot(conversation) == before
    assert fresh(conversation).status == ConversationStatus.CLOSED


def test_sending_to_a_deactivated_mobile_user_is_refused_and_changes_nothing(
    sender_client, sender, mobile_user, conversation
):
    say(conversation, sender, "earlier")
    MobileUser.objects.filter(pk=mobile_user.pk).update(is_active=False)
    before = snapshot(conversation)

    response = post_message(sender_client, conversation, "anyone there?")

    assert response.status_code == 404
    assert "no longer active" in response.json()["detail"]
    assert snapshot(conversation) == before


@pytest.mark.parametrize("author", ["business", "mobile"])
def test_sending_into_an_archived_conversation_reactivates_it(
    sender_client, mobile_client, conversation, author
):
    sender_client.post(url_of(conversation, "archive"))
    assert fresh(conversation).status == ConversationStatus.ARCHIVED

    client = sender_client if author == "business" else mobile_client
    response = post_message(client, conversation, "back again")

    assert response.status_code == 202
    assert fresh(conversation).status == ConversationStatus.ACTIVE
    assert client.get(url_of(conversation)).json()["status"] == "active"
    assert Conversation.objects.count() == 1


# --- GET conversations/{id}/messages/ ----------------------------------------------------------


def _walk(client, url: str) -> tuple[list[dict], list[int]]:
    """Follow `next` from `url`; return every message seen and the size of each page."""
    seen: list[dict] = []
    sizes: list[int] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"next", "previous", "results"}
        seen += body["results"]
        sizes.append(len(body["results"]))
        url = body["next"]
    return seen, sizes


def test_messages_are_cursor_paginated_newest_first(
    sender_client, mobile_client, sender, mobile_user, conversation
):
    sent = []
    for i in range(55):
        author = sender if i % 3 else mobile_user
        sent.append(say(conversation, author, f"m{i}"))
    newest_first = [str(m.pk) for m in reversed(sent)]

    seen, sizes = _walk(sender_client, url_of(conversation, "messages"))

    assert sizes == [50, 5]
    assert [m["id"] for m in seen] == newest_first
    assert [m["content"] for m in seen[:2]] == ["m54", "m53"]

    seen, sizes = _walk(mobile_client, f"{url_of(conversation, 'messages')}?page_size=7")

    assert sizes == [7] * 7 + [6]
    assert [m["id"] for m in seen] == newest_first
    assert len(set(m["id"] for m in seen)) == 55


def test_messages_page_is_stable_while_new_messages_arrive(sender_client, sender, conversation):
    sent = [say(conversation, sender, f"m{i}") for i in range(6)]
    first = sender_client.get(url_of(conversation, "messages"), {"page_size": 3}).json()

    say(conversation, sender, "newer")
    second = sender_client.get(first["next"]).json()

    assert [m["id"] for m in first["results"] + second["results"]] == [str(m.pk) for m in reversed(sent)]


def test_messages_show_sender_and_status(sender_client, sender, mobile_user, conversation):
    say(conversation, mobile_user, "question")

    item = sender_client.get(url_of(conversation, "messages")).json()["results"][0]

    assert item["sender"] == {"type": "mobile", "id": mobile_user.pk, "name": mobile_user.display}
    assert (item["kind"], item["conversation_id"], item["seq"]) == ("chat", str(conversation.pk), 1)
    assert (item["status"], item["read_at"], item["attachments"]) == ("queued", None, [])


def test_messages_of_another_owners_conversation_are_404(other_sender_client, stranger, sender, conversation):
    say(conversation, sender, "private")

    for client in (other_sender_client, client_for(stranger)):
        response = client.get(url_of(conversation, "messages"))
        assert response.status_code == 404
        assert "private" not in response.content.decode()


def test_messages_of_an_empty_conversation(sender_client, conversation):
    body = sender_client.get(url_of(conversation, "messages")).json()

    assert body == {"next": None, "previous": None, "results": []}


# --- POST conversations/{id}/read/ -------------------------------------------------------------


def test_read_marks_the_callers_incoming_messages_read_only(
    sender_client, mobile_client, sender, mobile_user, conversation
):
    incoming = [say(conversation, sender, "one"), say(conversation, sender, "two")]
    outgoing = say(conversation, mobile_user, "mine")
    before = timezone.now()

    response = mobile_client.post(url_of(conversation, "read"))

    assert response.status_code == 200
    assert response.json() == {"read": 2}
    for message in incoming:
        message.refresh_from_db()
        assert message.status == Status.READ
        assert before <= message.read_at <= timezone.now()
        assert message.delivered_at is not None
    outgoing.refresh_from_db()
    assert (outgoing.status, outgoing.read_at) == (Status.QUEUED, None)
    row = fresh(conversation)
    assert (row.unread_mobile, row.unread_business) == (0, 1)
    assert mobile_client.get(url_of(conversation)).json()["unread_count"] == 0
    assert sender_client.get(url_of(conversation)).json()["unread_count"] == 1


def test_read_is_idempotent(mobile_client, sender, conversation):
    message = say(conversation, sender, "one")
    mobile_client.post(url_of(conversation, "read"))
    read_at = Message.objects.get(pk=message.pk).read_at

    again = mobile_client.post(url_of(conversation, "read"))

    assert again.status_code == 200
    assert again.json() == {"read": 0}
    assert Message.objects.get(pk=message.pk).read_at == read_at
    assert fresh(conversation).unread_mobile == 0


def test_business_reads_what_the_mobile_user_wrote(
    sender_client, mobile_client, sender, mobile_user, conversation
):
    say(conversation, mobile_user, "question")
    say(conversation, sender, "answer")

    assert sender_client.post(url_of(conversation, "read")).json() == {"read": 1}

    row = fresh(conversation)
    assert (row.unread_business, row.unread_mobile) == (0, 1)
    assert Message.objects.get(content="question").status == Status.READ
    assert Message.objects.get(content="answer").status == Status.QUEUED


def test_reading_another_owners_conversation_is_404_and_reads_nothing(
    other_sender_client, stranger, sender, conversation
):
    message = say(conversation, sender, "one")

    for client in (other_sender_client, client_for(stranger)):
        assert client.post(url_of(conversation, "read")).status_code == 404
    assert Message.objects.get(pk=message.pk).status == Status.QUEUED
    assert fresh(conversation).unread_mobile == 1


# --- POST conversations/{id}/archive/ and close/ -----------------------------------------------


def test_archive_is_idempotent(sender_client, conversation):
    first = sender_client.post(url_of(conversation, "archive"))
    again = sender_client.post(url_of(conversation, "archive"))

    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["status"] == again.json()["status"] == "archived"
    assert set(first.json()) >= CONVERSATION_FIELDS
    assert fresh(conversation).status == ConversationStatus.ARCHIVED


def test_close_is_idempotent_and_stamps_closed_at(sender_client, conversation):
    first = sender_client.post(url_of(conversation, "close"))
    closed_at = fresh(conversation).closed_at
    again = sender_client.post(url_of(conversation, "close"))

    assert (first.status_code, again.status_code) == (200, 200)
    assert first.json()["status"] == again.json()["status"] == "closed"
    assert closed_at is not None
    assert fresh(conversation).closed_at == closed_at


def test_an_archived_conversation_can_be_closed(mobile_client, sender_client, conversation):
    sender_client.post(url_of(conversation, "archive"))

    response = mobile_client.post(url_of(conversation, "close"))

    assert response.status_code == 200
    assert fresh(conversation).status == ConversationStatus.CLOSED


def test_archiving_a_closed_conversation_is_409(sender_client, conversation):
    sender_client.post(url_of(conversation, "close"))

    response = sender_client.post(url_of(conversation, "archive"))

    assert response.status_code == 409
    assert "closed" in response.json()["detail"]
    assert fresh(conversation).status == ConversationStatus.CLOSED


@pytest.mark.parametrize("action", ["archive", "close"])
def test_archive_or_close_of_another_owners_conversation_is_404(
    other_sender_client, stranger, conversation, action
):
    for client in (other_sender_client, client_for(stranger)):
        response = client.post(url_of(conversation, action))
        assert response.status_code == 404
    row = fresh(conversation)
    assert (row.status, row.closed_at) == (ConversationStatus.ACTIVE, None)


# --- GET conversations/unread-count/ -----------------------------------------------------------


def test_unread_count_is_exact_for_each_side_after_sends_and_reads(
    sender_client, mobile_client, sender, mobile_user, conversation
):
    other_mobile = MobileUserFactory()
    other_mobile_client = client_for(other_mobile)
    second = ConversationFactory(business=sender, mobile=other_mobile)
    zero = {"conversations": 0, "messages": 0}
    for client in (sender_client, mobile_client, other_mobile_client):
        assert client.get(UNREAD_URL).json() == zero

    for content in ("a", "b", "c"):
        post_message(sender_client, conversation, content)
    post_message(sender_client, second, "d")
    post_message(mobile_client, conversation, "e")
    post_message(mobile_client, conversation, "f")
    post_message(other_mobile_client, second, "g")

    assert sender_client.get(UNREAD_URL).json() == {"conversations": 2, "messages": 3}
    assert mobile_client.get(UNREAD_URL).json() == {"conversations": 1, "messages": 3}
    assert other_mobile_client.get(UNREAD_URL).json() == {"conversations": 1, "messages": 1}

    mobile_client.post(url_of(conversation, "read"))

    assert mobile_client.get(UNREAD_URL).json() == zero
    assert sender_client.get(UNREAD_URL).json() == {"conversations": 2, "messages": 3}

    sender_client.post(url_of(second, "read"))

    assert sender_client.get(UNREAD_URL).json() == {"conversations": 1, "messages": 2}
    assert other_mobile_client.get(UNREAD_URL).json() == {"conversations": 1, "messages": 1}


def test_unread_count_of_a_stranger_is_zero(stranger, sender, conversation):
    say(conversation, sender, "not for the stranger")

    assert client_for(stranger).get(UNREAD_URL).json() == {"conversations": 0, "messages": 0}


# --- GET messages/{id}/ for chat messages --------------------------------------------------------


def test_message_detail_shows_a_chat_message_the_business_sent(sender_client, conversation):
    sent = post_message(sender_client, conversation, "hello").json()

    response = sender_client.get(f"/api/v1/messages/{sent['id']}/")

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["kind"], body["conversation_id"]) == (sent["id"], "chat", str(conversation.pk))
    assert (body["seq"], body["status"], body["attempts"]) == (sent["seq"], "queued", [])


def test_message_detail_is_404_for_a_message_the_business_received(
    sender_client, mobile_client, other_sender_client, conversation
):
    received = post_message(mobile_client, conversation, "question").json()
    sent = post_message(sender_client, conversation, "answer").json()

    assert sender_client.get(f"/api/v1/messages/{received['id']}/").status_code == 404
    assert other_sender_client.get(f"/api/v1/messages/{sent['id']}/").status_code == 404


# --- query budgets ---------------------------------------------------------------------------


def test_list_query_count_does_not_grow_with_conversations(
    sender_client, sender, django_assert_max_num_queries
):
    for _ in range(6):
        conversation = ConversationFactory(business=sender)
        say(conversation, sender, "out")
        say(conversation, conversation.mobile, "in")

    sender_client.get(UNREAD_URL)  # warm-up: the token's first use records last_used_at
    # token 1, permissions 2, count 1, page 1 (parties and last message joined)
    with django_assert_max_num_queries(5):
        response = sender_client.get(URL)

    assert response.json()["count"] == 6
    assert all(item["last_message"]["sender"]["type"] == "mobile" for item in response.json()["results"])


def test_messages_query_count_does_not_grow_with_messages(
    mobile_client, sender, mobile_user, conversation, django_assert_max_num_queries
):
    for i in range(20):
        say(conversation, sender if i % 2 else mobile_user, f"m{i}")

    mobile_client.get(UNREAD_URL)  # warm-up: the token's first use records last_used_at
    # token 1, conversation 1, page 1, attachments prefetch 1
    with django_assert_max_num_queries(4):
        response = mobile_client.get(url_of(conversation, "messages"))

    assert len(response.json()["results"]) == 20


def test_an_invalid_cursor_is_404(sender_client, conversation):
    response = sender_client.get(url_of(conversation, "messages"), {"cursor": "garbage"})

    assert response.status_code == 404
    assert response.json()["detail"]
