"""`GET /api/v1/mobile/me/export/`: everything about the caller, nothing about anybody else."""

from __future__ import annotations

import json

import pytest

from apps.audit.models import AuditEntry
from apps.conversations.services import conversation_message_send
from apps.devices.services import device_register, preferences_update
from apps.messaging import services
from apps.messaging.models import Channel, DeliveryAttempt, Message, Outcome
from apps.privacy import selectors
from tests.conftest import client_for
from tests.factories import ConversationFactory, MobileUserFactory

from .conftest import pdf_upload

URL = "/api/v1/mobile/me/export/"


def export_of(client) -> dict:
    response = client.get(URL)
    assert response.status_code == 200, response
    assert response["Content-Type"] == "application/json"
    return json.loads(b"".join(response.streaming_content))


@pytest.fixture
def history(sender, mobile_user, stranger):
    """Messages, a conversation, devices and preferences for `mobile_user`, and some for `stranger`."""
    media = pdf_upload(sender)
    one_way = services.message_send(
        sender=sender,
        recipient_phone_number=mobile_user.phone_number,
        subject="Your order",
        content="order 42 shipped",
        attachment_ids=[media.pk],
    )
    DeliveryAttempt.objects.create(
        message=one_way, at=one_way.created_at, channel=Channel.WEBSOCKET, outcome=Outcome.SENT
    )
    conversation = ConversationFactory(business=sender, mobile=mobile_user)
    reply = conversation_message_send(author=mobile_user, conversation_id=conversation.pk, content="thanks!")
    device_register(mobile_user=mobile_user, token="device-token-of-mine", platform="android")
    preferences_update(mobile_user=mobile_user, push_enabled=False, timezone="Europe/Paris")
    # The stranger's data, which must not appear.
    services.message_send(sender=sender, recipient_phone_number=stranger.phone_number, content="not yours")
    device_register(mobile_user=stranger, token="device-token-of-stranger", platform="ios")
    ConversationFactory(business=sender, mobile=stranger)
    return {"one_way": one_way, "reply": reply, "conversation": conversation, "media": media}


def test_export_contains_the_callers_profile_preferences_devices_messages_and_conversations(
    mobile_user, history
):
    data = export_of(client_for(mobile_user))

    assert data["profile"]["phone_number"] == mobile_user.phone_number
    assert data["profile"]["id"] == mobile_user.pk
    assert data["preferences"]["push_enabled"] is False
    assert data["preferences"]["timezone"] == "Europe/Paris"
    assert [d["token"] for d in data["devices"]] == ["device-token-of-mine"]
    assert len(data["api_tokens"]) == 1 and "digest" not in data["api_tokens"][0]
    assert [c["id"] for c in data["conversations"]] == [str(history["conversation"].pk)]

    received = {m["id"]: m for m in data["messages_received"]}
    one_way = received[str(history["one_way"].pk)]
    assert one_way["content"] == "order 42 shipped"
    assert one_way["subject"] == "Your order"
    assert [a["outcome"] for a in one_way["attempts"]] == ["sent"]
    assert [a["id"] for a in one_way["attachments"]] == [str(history["media"].pk)]
    assert [m["content"] for m in data["messages_sent"]] == ["thanks!"]
    assert data["messages_sent"][0]["recipient"]["type"] == "business"


def test_export_contains_nothing_of_another_user(mobile_user, stranger, history):
    text = json.dumps(export_of(client_for(mobile_user)))

    assert "not yours" not in text
    assert "device-token-of-stranger" not in text
    assert stranger.phone_number not in text
    # And the other way round: the stranger sees only its own message.
    other = export_of(client_for(stranger))
    assert [m["content"] for m in other["messages_received"]] == ["not yours"]
    assert other["messages_sent"] == []
    assert "order 42 shipped" not in json.dumps(other)


def test_export_reads_messages_a_page_at_a_time(mobile_user, sender, monkeypatch):
    monkeypatch.setattr(selectors, "EXPORT_PAGE", 3)
    for i in range(7):
        services.message_send(sender=sender, recipient_phone_number=mobile_user.phone_number, content=f"m{i}")
    pieces = list(selectors.mobile_user_export(mobile_user=mobile_user))
    data = json.loads("".join(pieces))

    assert [m["content"] for m in data["messages_received"]] == [f"m{i}" for i in range(7)]
    assert [m["seq"] for m in data["messages_received"]] == list(range(1, 8))
    # Three pages of received messages, each its own piece: never the whole history at once.
    assert sum(1 for p in pieces if '"content": "m' in p) == 3


def test_export_is_audited(mobile_user):
    export_of(client_for(mobile_user))

    entry = AuditEntry.objects.get(action="mobile_user.export")
    assert (entry.actor_type, entry.actor_id) == ("mobile", mobile_user.pk)
    assert entry.object_id == str(mobile_user.pk)


def test_senders_cannot_export(sender_client):
    assert sender_client.get(URL).status_code == 403
    assert not AuditEntry.objects.filter(action="mobile_user.export").exists()


def test_export_needs_a_token(anonymous_client):
    assert anonymous_client.get(URL).status_code == 401


def test_an_empty_user_exports_empty_lists(db):
    user = MobileUserFactory()
    data = export_of(client_for(user))
    assert data["messages_received"] == [] and data["messages_sent"] == [] and data["devices"] == []
    assert Message.objects.count() == 0
