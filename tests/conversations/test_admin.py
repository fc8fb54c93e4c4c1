"""The operators' admin for conversations, driven through Django's test client.

Conversations and their messages are made by the real services; the archive and close
actions must move the status through `conversations.services` (which stamps `closed_at` and
logs `conversation.status`), never by writing the column.
"""

from __future__ import annotations

import logging
import re

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from apps.conversations import services
from apps.conversations.admin import RECENT_MESSAGES
from apps.conversations.models import Conversation, ConversationStatus
from apps.messaging.models import Message
from tests.factories import ConversationFactory, MobileUserFactory, SenderFactory

CHANGELIST = reverse("admin:conversations_conversation_changelist")
ACTIVE, ARCHIVED, CLOSED = ConversationStatus.ACTIVE, ConversationStatus.ARCHIVED, ConversationStatus.CLOSED


def change_url(conversation: Conversation) -> str:
    return reverse("admin:conversations_conversation_change", args=[conversation.pk])


def rows(response) -> list[Conversation]:
    return list(response.context["cl"].result_list)


def shown_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def post_action(client: Client, action: str, conversations: list[Conversation]):
    data = {"action": action, "_selected_action": [str(c.pk) for c in conversations], "index": "0"}
    return client.post(CHANGELIST, data, follow=True)


def status_of(conversation: Conversation) -> str:
    return Conversation.objects.values_list("status", flat=True).get(pk=conversation.pk)


def chat(conversation: Conversation, *contents: str, by_mobile: bool = False) -> list[Message]:
    author = conversation.mobile if by_mobile else conversation.business
    return [
        services.conversation_message_send(conversation_id=conversation.pk, author=author, content=content)
        for content in contents
    ]


def staff_client(*permissions: str) -> Client:
    user = SenderFactory(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=permissions))
    client = Client()
    client.force_login(user)
    return client


# --- pages ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_changelist_shows_columns_and_unread_counters(admin_client):
    conversation = ConversationFactory()
    chat(conversation, "one", "two")
    chat(conversation, "back", by_mobile=True)

    response = admin_client.get(CHANGELIST)

    assert response.status_code == 200
    assert rows(response) == [conversation]
    html = response.content.decode()
    for header in ("Business", "Mobile", "Status", "Last message at", "Unread business", "Unread mobile"):
        assert header in html
    assert conversation.mobile.phone_number in html
    assert conversation.business.username in html
    row = rows(response)[0]
    assert (row.unread_mobile, row.unread_business) == (2, 1)


@pytest.mark.django_db
def test_changelist_filters_by_status(admin_client):
    active = ConversationFactory()
    archived = ConversationFactory(status=ARCHIVED)
    closed = ConversationFactory(status=CLOSED)

    by_status = {
        status: rows(admin_client.get(CHANGELIST, {"status__exact": status}))
        for status in (ACTIVE, ARCHIVED, CLOSED)
    }

    assert by_status == {ACTIVE: [active], ARCHIVED: [archived], CLOSED: [closed]}


@pytest.mark.django_db
def test_search_finds_by_phone_in_any_spacing_by_part_of_phone_and_by_business_username(admin_client):
    wanted = ConversationFactory(
        mobile=MobileUserFactory(phone_number="+14155550123"), business=SenderFactory(username="acme-bank")
    )
    ConversationFactory(mobile=MobileUserFactory(phone_number="+14155550999"))

    by_phone = admin_client.get(CHANGELIST, {"q": "+1 415 555 0123"})
    by_part = admin_client.get(CHANGELIST, {"q": "0123"})
    by_username = admin_client.get(CHANGELIST, {"q": "acme"})
    nothing = admin_client.get(CHANGELIST, {"q": "nobody-like-this"})

    assert by_phone.status_code == 200
    assert rows(by_phone) == [wanted]
    assert rows(by_part) == [wanted]
    assert rows(by_username) == [wanted]
    assert rows(nothing) == []


@pytest.mark.django_db
def test_changelist_query_count_does_not_grow_with_rows(admin_client):
    for _ in range(2):
        chat(ConversationFactory(), "hi")
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(CHANGELIST).status_code == 200
    # Each with its own business and mobile user: an N+1 would show up as extra queries.
    for _ in range(8):
        chat(ConversationFactory(), "hi")
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(CHANGELIST).status_code == 200

    assert len(many) == len(few)


@pytest.mark.django_db
def test_change_page_shows_latest_messages_newest_first_and_nothing_editable(admin_client):
    conversation = ConversationFactory()
    sent = chat(conversation, *(f"message {i}" for i in range(RECENT_MESSAGES + 5)))

    response = admin_client.get(change_url(conversation))

    assert response.status_code == 200
    html = response.content.decode()
    assert "View conversation" in html
    assert response.context["adminform"].form.fields == {}
    assert not re.search(r'<(select|input|textarea)[^>]*name="status"', html)
    assert 'name="_save"' not in html
    inline = response.context["inline_admin_formsets"][0]
    shown = [form.original for form in inline]
    newest_first = sorted(sent, key=lambda m: (m.created_at, m.pk), reverse=True)
    assert shown == newest_first[:RECENT_MESSAGES]
    assert f"message {RECENT_MESSAGES + 4}" in html
    assert "message 0<" not in html  # the oldest ones are beyond the latest 20


@pytest.mark.django_db
def test_change_page_query_count_does_not_grow_with_messages(admin_client):
    conversation = ConversationFactory()
    chat(conversation, "a", "b")
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(change_url(conversation)).status_code == 200
    chat(conversation, *("c" * 8))
    chat(conversation, *("d" * 8), by_mobile=True)
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(change_url(conversation)).status_code == 200

    assert len(many) == len(few)


@pytest.mark.django_db
def test_change_post_is_refused_and_nothing_changes(admin_client):
    conversation = ConversationFactory()
    chat(conversation, "hi")

    response = admin_client.post(change_url(conversation), {"status": CLOSED, "unread_mobile": "0"})

    assert response.status_code == 403
    conversation.refresh_from_db()
    assert (conversation.status, conversation.unread_mobile) == (ACTIVE, 1)


@pytest.mark.django_db
def test_conversations_cannot_be_added_or_deleted_in_the_admin(admin_client):
    conversation = ConversationFactory()

    add = admin_client.get(reverse("admin:conversations_conversation_add"))
    delete = admin_client.post(
        reverse("admin:conversations_conversation_delete", args=[conversation.pk]), {"post": "yes"}
    )
    actions = [
        name for name, _ in admin_client.get(CHANGELIST).context["action_form"].fields["action"].choices
    ]

    assert add.status_code == 403
    assert delete.status_code == 403
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    assert "delete_selected" not in actions
    assert {"archive_selected", "close_selected"} <= set(actions)


# --- actions ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_archive_action_archives_through_the_service_and_logs_it(admin_client, caplog):
    active, other = ConversationFactory(), ConversationFactory()
    chat(active, "hi")

    with caplog.at_level(logging.INFO, logger="apps.conversations.services"):
        response = post_action(admin_client, "archive_selected", [active])

    assert response.status_code == 200
    assert "1 conversation is now archived." in shown_messages(response)
    assert (status_of(active), status_of(other)) == (ARCHIVED, ACTIVE)
    assert [r.conversation_id for r in caplog.records if r.msg == "conversation.status"] == [str(active.pk)]
    entry = LogEntry.objects.get()
    assert (entry.object_id, entry.action_flag) == (str(active.pk), CHANGE)
    # Archiving touches neither the counters nor the last message.
    active.refresh_from_db()
    assert active.unread_mobile == 1
    assert active.last_message_id == Message.objects.get().pk


@pytest.mark.django_db
def test_close_action_closes_active_and_archived_conversations_and_frees_the_pair(admin_client):
    active, archived = ConversationFactory(), ConversationFactory(status=ARCHIVED)

    response = post_action(admin_client, "close_selected", [active, archived])

    assert "2 conversations are now closed." in shown_messages(response)
    for conversation in (active, archived):
        conversation.refresh_from_db()
        assert conversation.status == CLOSED
        assert conversation.closed_at is not None  # stamped by the service
    reopened, created = services.conversation_get_or_create(
        business=active.business, mobile_phone_number=active.mobile.phone_number
    )
    assert created and reopened.pk != active.pk


@pytest.mark.django_db
def test_closing_a_closed_conversation_again_is_harmless(admin_client):
    conversation = ConversationFactory()
    post_action(admin_client, "close_selected", [conversation])
    closed_at = Conversation.objects.get(pk=conversation.pk).closed_at

    response = post_action(admin_client, "close_selected", [conversation])

    assert response.status_code == 200
    assert "1 conversation was already closed." in shown_messages(response)
    conversation.refresh_from_db()
    assert (conversation.status, conversation.closed_at) == (CLOSED, closed_at)
    assert LogEntry.objects.count() == 1  # only the first close


@pytest.mark.django_db
def test_archive_action_leaves_closed_conversations_closed_and_says_so(admin_client):
    closed, active = ConversationFactory(status=CLOSED), ConversationFactory()

    response = post_action(admin_client, "archive_selected", [closed, active])

    assert response.status_code == 200
    assert "1 conversation is now archived." in shown_messages(response)
    assert "1 conversation was not archived: it is closed, and closed is final." in shown_messages(response)
    assert (status_of(closed), status_of(active)) == (CLOSED, ARCHIVED)


@pytest.mark.django_db
def test_staff_without_change_permission_sees_conversations_but_cannot_archive_or_close():
    conversation = ConversationFactory()
    client = staff_client("view_conversation", "view_message")

    listing = client.get(CHANGELIST)
    page = client.get(change_url(conversation))
    post_action(client, "close_selected", [conversation])

    assert listing.status_code == page.status_code == 200
    assert listing.context["action_form"] is None
    assert status_of(conversation) == ACTIVE


@pytest.mark.django_db
def test_staff_with_change_permission_can_close():
    conversation = ConversationFactory()
    client = staff_client("view_conversation", "change_conversation")

    response = post_action(client, "close_selected", [conversation])

    assert "1 conversation is now closed." in shown_messages(response)
    assert status_of(conversation) == CLOSED
