"""Representations shared by the messaging endpoints (the input shapes live in apis.py)."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.media.serializers import AttachmentSerializer, attachment_payload

from .models import DeadLetter, DeliveryAttempt, Message


class AttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeliveryAttempt
        fields = ["at", "channel", "outcome", "error"]


class MessageSerializer(serializers.ModelSerializer):
    recipient_phone_number = serializers.CharField(source="recipient.phone_number")
    conversation_id = serializers.SerializerMethodField()
    attachments = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = [
            "id",
            "kind",
            "conversation_id",
            "recipient_phone_number",
            "seq",
            "subject",
            "content",
            "content_type",
            "priority",
            "status",
            "retry_count",
            "failure_reason",
            "ttl_seconds",
            "expires_at",
            "send_at",
            "created_at",
            "sent_at",
            "delivered_at",
            "read_at",
            "failed_at",
            "canceled_at",
            "correlation_id",
            "attachments",
        ]

    @extend_schema_field(serializers.UUIDField(allow_null=True))
    def get_conversation_id(self, message: Message) -> str | None:
        return str(message.conversation_id) if message.conversation_id else None

    @extend_schema_field(AttachmentSerializer(many=True))
    def get_attachments(self, message: Message) -> list[dict]:
        # Fresh signed URLs on every read; selectors prefetch `attachments`.
        return [attachment_payload(media) for media in message.attachments.all()]


class MessageDetailSerializer(MessageSerializer):
    attempts = AttemptSerializer(many=True, read_only=True)

    class Meta(MessageSerializer.Meta):
        fields = [*MessageSerializer.Meta.fields, "attempts"]


class DeadLetterSerializer(serializers.ModelSerializer):
    message_id = serializers.UUIDField()
    status = serializers.CharField(source="message.status")
    retry_count = serializers.IntegerField(source="message.retry_count")

    class Meta:
        model = DeadLetter
        fields = ["id", "message_id", "status", "reason", "retry_count", "created_at", "payload"]


class DeadLetterDetailSerializer(DeadLetterSerializer):
    attempts = AttemptSerializer(source="message.attempts", many=True, read_only=True)

    class Meta(DeadLetterSerializer.Meta):
        fields = [*DeadLetterSerializer.Meta.fields, "attempts"]
