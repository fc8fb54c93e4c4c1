"""Representations of conversations and their messages."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.accounts.models import PartyKind
from apps.media.serializers import AttachmentSerializer, attachment_payload
from apps.messaging.frames import author_payload
from apps.messaging.models import Message

from .models import Conversation


class ParticipantSerializer(serializers.Serializer):
    # A plain string, not a choice: an enum named after the field ("TypeEnum") would collide in
    # the schema with any other `type` choice field.
    type = serializers.CharField(help_text="`business` or `mobile`.")
    id = serializers.IntegerField()
    name = serializers.CharField()


class MobileParticipantSerializer(ParticipantSerializer):
    phone_number = serializers.CharField()


class ChatMessageSerializer(serializers.ModelSerializer):
    """A message as a participant of its conversation sees it."""

    conversation_id = serializers.UUIDField()
    sender = serializers.SerializerMethodField()
    attachments = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = [
            "id",
            "seq",
            "kind",
            "conversation_id",
            "sender",
            "content",
            "content_type",
            "status",
            "created_at",
            "sent_at",
            "delivered_at",
            "read_at",
            "failed_at",
            "attachments",
        ]

    @extend_schema_field(ParticipantSerializer)
    def get_sender(self, message: Message) -> dict:
        return author_payload(message)

    @extend_schema_field(AttachmentSerializer(many=True))
    def get_attachments(self, message: Message) -> list[dict]:
        return [attachment_payload(media) for media in message.attachments.all()]


class LastMessageSerializer(serializers.ModelSerializer):
    sender = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = ["id", "sender", "content", "content_type", "status", "created_at"]

    @extend_schema_field(ParticipantSerializer)
    def get_sender(self, message: Message) -> dict:
        return author_payload(message)


class ConversationSerializer(serializers.ModelSerializer):
    """A conversation as seen by one side: `unread_count` is the caller's (context `side`)."""

    business = serializers.SerializerMethodField()
    mobile = serializers.SerializerMethodField()
    last_message = LastMessageSerializer(allow_null=True)
    unread_count = serializers.SerializerMethodField()

    class Meta:
        model = Conversation
        fields = [
            "id",
            "status",
            "business",
            "mobile",
            "last_message_at",
            "last_message",
            "unread_count",
            "created_at",
            "closed_at",
        ]

    @extend_schema_field(ParticipantSerializer)
    def get_business(self, conversation: Conversation) -> dict:
        business = conversation.business
        return {"type": PartyKind.BUSINESS, "id": business.pk, "name": business.name}

    @extend_schema_field(MobileParticipantSerializer)
    def get_mobile(self, conversation: Conversation) -> dict:
        mobile = conversation.mobile
        return {
            "type": PartyKind.MOBILE,
            "id": mobile.pk,
            "name": mobile.display,
            "phone_number": mobile.phone_number,
        }

    def get_unread_count(self, conversation: Conversation) -> int:
        return conversation.unread_for(self.context["side"])
