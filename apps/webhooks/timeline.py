"""Webhook events on a message's admin timeline (apps/messaging/timeline.py): recorded, then each attempt."""

from __future__ import annotations

from collections.abc import Iterable

from apps.messaging.models import Message
from apps.messaging.timeline import TimelineEvent

from .models import WebhookDelivery, WebhookEvent


def message_webhook_events(message: Message) -> Iterable[TimelineEvent]:
    events = list(WebhookEvent.objects.filter(message_id=message.pk).select_related("endpoint"))
    for event in events:
        where = f"{event.type} to {event.endpoint.url} (webhook-id {event.event_id})"
        yield TimelineEvent(event.created_at, "webhook event recorded", where, rank=70)
    deliveries = WebhookDelivery.objects.filter(event__in=events).select_related("event").order_by("at", "id")
    for delivery in deliveries:
        answer = f"HTTP {delivery.status_code}" if delivery.status_code else delivery.error or "no answer"
        detail = f"{delivery.event.type}, attempt {delivery.attempt}: {delivery.outcome} ({answer})"
        yield TimelineEvent(delivery.at, "webhook delivery", detail, rank=75)
