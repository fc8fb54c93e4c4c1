"""represent(): the same representation as a fresh serializer, its fields built once."""

from __future__ import annotations

from apps.common import serializers as helpers
from apps.common.serializers import represent
from apps.conversations.serializers import ChatMessageSerializer
from apps.conversations.services import conversation_message_send
from apps.messaging.serializers import MessageSerializer
from tests.factories import MessageFactory


def test_represent_equals_a_fresh_serializers_data_and_builds_fields_once(sender, monkeypatch):
    helpers._shared.clear()
    builds: list[type] = []
    real = MessageSerializer.get_fields

    def counting(self):
        builds.append(type(self))
        return real(self)

    monkeypatch.setattr(MessageSerializer, "get_fields", counting)
    messages = MessageFactory.create_batch(3, sender=sender)

    shared = [represent(MessageSerializer, m) for m in messages]

    assert builds == [MessageSerializer]
    assert shared == [dict(MessageSerializer(m).data) for m in messages]
    assert len({r["id"] for r in shared}) == 3


def test_represent_of_a_chat_message_shows_its_author(conversation, mobile_user):
    message = conversation_message_send(conversation_id=conversation.pk, author=mobile_user, content="hi")

    assert represent(ChatMessageSerializer, message) == dict(ChatMessageSerializer(message).data)
    assert represent(ChatMessageSerializer, message)["sender"]["type"] == "mobile"
