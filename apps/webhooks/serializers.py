"""Representations of webhook endpoints and delivery attempts (the secret only where it is new)."""

from __future__ import annotations

from rest_framework import serializers

from .models import EventType, WebhookDelivery, WebhookEndpoint


class WebhookEndpointSerializer(serializers.ModelSerializer):
    events = serializers.ListField(child=serializers.ChoiceField(choices=EventType.choices))

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "description", "is_active", "created_at"]


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    """The answer to create and rotate: the only ones that show the secret in full."""

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    event_id = serializers.UUIDField(source="event.event_id")
    type = serializers.ChoiceField(source="event.type", choices=EventType.choices)

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "type",
            "attempt",
            "outcome",
            "status_code",
            "error",
            "at",
            "duration_ms",
            "next_attempt_at",
        ]
