"""`DELETE /api/v1/mobile/me/` and the admin's erase action: the user's data goes, at once."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from apps.accounts.models import ApiToken, MobileUser
from apps.accounts.party import Party
from apps.accounts.selectors import principal_cache_clear
from apps.accounts.services import token_create
from apps.audit.models import AuditEntry
from apps.conversations.models import ConversationStatus
from apps.conversations.services import conversation_message_send
from apps.devices.models import DeviceToken, PushPreferences
from apps.devices.services import device_register, preferences_update
from apps.media.models import Media
from apps.messaging import services
from apps.messaging.models import DeadLetter, Message, Outcome, Status
from apps.privacy.services import erased_phone_placeholder, mobile_user_erase
from tests.conftest import client_for
from tests.factories import ConversationFactory, SenderFactory

from .conftest import pdf_upload, stored_files

URL = "/api/v1/mobile/me/"
MOBILE_USERS = reverse("admin:accounts_mobileuser_changelist")


@pytest.fixture
def data(sender, mobile_user, stranger):
    """A delivered message with an attachment, a pending one, a dead letter, a chat, a device."""
    media = pdf_upload(sender)
    delivered = services.message_send(
        sender=sender,
        recipient_phone_number=mobile_user.phone_number,
        subject="Invoice",
        content="secret invoice text",
        attachment_ids=[media.pk],
    )
    services.messages_mark_sent([delivered.pk])
    services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=[delivered.pk])
    pending = services.message_send(
        sender=sender, recipient_phone_number=mobile_user.phone_number, content="later"
    )
    dead = services.message_send(
        sender=sender, recipient_phone_number=mobile_user.phone_number, content="dead one"
    )
    services.messages_mark_sent([dead.pk])
    services.messages_fail(
        Message.objects.filter(pk=dead.pk), reason="no ack", attempt_outcome=Outcome.TIMEOUT
    )
    conversation = ConversationFactory(business=sender, mobile=mobile_user)
    chat = conversation_message_send(author=mobile_user, conversation_id=conversation.pk, content="my words")
    device_register(mobile_user=mobile_user, token="tok-mine", platform="android")
    preferences_update(mobile_user=mobile_user, push_enabled=False)
    # Another user's, untouched by the erasure.
    kept = services.message_send(sender=sender, recipient_phone_number=stranger.phone_number, content="kept")
    device_register(mobile_user=stranger, token="tok-stranger", platform="ios")
    return {
        "media": media,
        "delivered": delivered,
        "pending": pending,
        "dead": dead,
        "chat": chat,
        "conversation": conversation,
        "kept": kept,
    }


def test_erase_removes_content_phone_devices_tokens_and_attachments(
    mobile_user, stranger, data, media_root, django_capture_on_commit_callbacks
):
    phone = mobile_user.phone_number
    client = client_for(mobile_user)
    assert stored_files(media_root)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete(URL)

    assert response.status_code == 204
    user = MobileUser.objects.get(pk=mobile_user.pk)
    assert user.phone_number == erased_phone_placeholder(user.pk) != phone
    assert not user.is_active and user.name == ""
    assert not MobileUser.objects.filter(phone_number=phone).exists()
    assert not ApiToken.objects.filter(mobile_user=user).exists()
    assert not DeviceToken.objects.filter(mobile_user=user).exists()
    assert not PushPreferences.objects.filter(mobile_user=user).exists()
    theirs = Message.objects.filter(pk__in=[data[k].pk for k in ("delivered", "pending", "dead", "chat")])
    assert set(theirs.values_list("content", "subject")) == {("", "")}
    assert not Media.objects.filter(pk=data["media"].pk).exists()
    assert stored_files(media_root) == []
    assert DeadLetter.objects.get(message=data["dead"]).payload == {"erased": True}
    assert (
        data["conversation"].__class__.objects.get(pk=data["conversation"].pk).status
        == ConversationStatus.CLOSED
    )
    # Nothing of anybody else's.
    assert Message.objects.get(pk=data["kept"].pk).content == "kept"
    assert DeviceToken.objects.filter(mobile_user=stranger).count() == 1
    assert MobileUser.objects.get(pk=stranger.pk).is_active


def test_erase_fails_undelivered_messages_through_the_lifecycle(mobile_user, data):
    client_for(mobile_user).delete(URL)

    pending = Message.objects.get(pk=data["pending"].pk)
    assert pending.status == Status.FAILED
    assert pending.failure_reason == "recipient erased"
    # Terminal ones keep their status: nothing moves backwards or sideways.
    assert Message.objects.get(pk=data["dead"].pk).status == Status.FAILED
    assert Message.objects.get(pk=data["dead"].pk).failure_reason == "no ack"
    assert Message.objects.get(pk=data["delivered"].pk).status != Status.FAILED


def test_the_token_gets_401_at_once_even_when_cached(mobile_user, settings):
    settings.AUTH_TOKEN_CACHE_SECONDS = 60
    principal_cache_clear()
    client = client_for(mobile_user)
    assert client.get("/api/v1/devices/").status_code == 200  # now cached in this process

    assert client.delete(URL).status_code == 204

    assert client.get("/api/v1/devices/").status_code == 401
    assert client.get("/api/v1/mobile/me/export/").status_code == 401
    principal_cache_clear()


def test_a_token_revoked_by_another_process_stops_at_once(mobile_user, settings):
    """Another web process has the principal cached: the Redis marker makes it look again."""
    from apps.accounts import selectors

    settings.AUTH_TOKEN_CACHE_SECONDS = 60
    principal_cache_clear()
    key = token_create(owner=mobile_user)
    assert selectors.principal_for_token(key=key) == mobile_user
    cached = dict(selectors._principals)

    mobile_user_erase(mobile_user=mobile_user, actor=None)
    selectors._principals.update(cached)  # as if this were the other process

    assert selectors.principal_for_token(key=key) is None
    principal_cache_clear()


def test_erase_is_audited_and_idempotent(mobile_user, data):
    client = client_for(mobile_user)
    assert client.delete(URL).status_code == 204
    mobile_user_erase(mobile_user=MobileUser.objects.get(pk=mobile_user.pk), actor=None)

    entries = AuditEntry.objects.filter(action="mobile_user.erase", object_id=str(mobile_user.pk)).order_by(
        "at", "id"
    )
    assert [(e.actor_type, e.actor_id) for e in entries] == [("mobile", mobile_user.pk), ("system", None)]
    assert entries[0].details["tokens"] == 1 and entries[0].details["devices"] == 1
    assert entries[1].details["tokens"] == 0


def test_senders_cannot_erase_and_nobody_erases_another_user(sender_client, mobile_user, stranger):
    assert sender_client.delete(URL).status_code == 403
    # The path has no id: a mobile user can only ever erase itself.
    assert client_for(stranger).delete(URL).status_code == 204
    assert MobileUser.objects.get(pk=mobile_user.pk).is_active
    assert client_for(mobile_user).get("/api/v1/devices/").status_code == 200


def test_get_on_me_is_not_allowed(mobile_user):
    assert client_for(mobile_user).get(URL).status_code == 405


# --- admin ---------------------------------------------------------------------------------


def staff(*codenames: str):
    user = SenderFactory(is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames)
    )
    client = Client()
    client.force_login(user)
    return user, client


def test_operators_with_delete_permission_erase_from_the_admin(mobile_user, data):
    operator, client = staff("view_mobileuser", "change_mobileuser", "delete_mobileuser")
    response = client.post(
        MOBILE_USERS, {"action": "erase_selected", "_selected_action": [str(mobile_user.pk)]}, follow=True
    )

    assert response.status_code == 200
    user = MobileUser.objects.get(pk=mobile_user.pk)
    assert not user.is_active and user.phone_number == erased_phone_placeholder(user.pk)
    entry = AuditEntry.objects.get(action="mobile_user.erase")
    assert (entry.actor_type, entry.actor_id) == ("business", operator.pk)


def test_operators_without_delete_permission_cannot_erase(mobile_user):
    _, client = staff("view_mobileuser", "change_mobileuser")
    page = client.get(MOBILE_USERS)
    assert b"erase_selected" not in page.content
    client.post(MOBILE_USERS, {"action": "erase_selected", "_selected_action": [str(mobile_user.pk)]})

    assert MobileUser.objects.get(pk=mobile_user.pk).is_active
    assert not AuditEntry.objects.filter(action="mobile_user.erase").exists()


def test_a_deactivated_user_can_still_be_erased_from_the_admin(mobile_user):
    MobileUser.objects.filter(pk=mobile_user.pk).update(is_active=False)
    device_register(mobile_user=mobile_user, token="tok-deactivated", platform="ios")
    _, client = staff("view_mobileuser", "change_mobileuser", "delete_mobileuser")
    client.post(MOBILE_USERS, {"action": "erase_selected", "_selected_action": [str(mobile_user.pk)]})

    assert MobileUser.objects.get(pk=mobile_user.pk).phone_number == erased_phone_placeholder(mobile_user.pk)
    assert not DeviceToken.objects.filter(mobile_user=mobile_user).exists()


def test_erase_wipes_scheduled_messages_which_fail_once_due(sender, mobile_user):
    from datetime import timedelta

    from django.utils import timezone

    message = services.message_send(
        sender=sender,
        recipient_phone_number=mobile_user.phone_number,
        content="scheduled secret",
        send_at=timezone.now() + timedelta(hours=1),
    )
    mobile_user_erase(mobile_user=mobile_user, actor=None)

    message.refresh_from_db()
    # Scheduled is left only when due (lifecycle), but nothing of what it said is kept.
    assert (message.status, message.content) == (Status.SCHEDULED, "")
