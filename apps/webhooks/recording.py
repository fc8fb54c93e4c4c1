"""Listeners of apps.messaging.hooks: an event row per (change, subscribed endpoint), in its transaction.

They run on every status change, inside its transaction, so they stay cheap: nothing for a
mobile author's messages, one query for the active endpoints of the senders involved, and
one multi-row INSERT. Delivery is woken only after commit.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from django.db import transaction

from apps.messaging import hooks

from .models import EventType, WebhookEndpoint, WebhookEvent

# Message status -> event type; other statuses (queued, pending, scheduled) are not reported.
STATUS_EVENTS: dict[str, str] = {
    "sent": EventType.MESSAGE_SENT,
    "delivered": EventType.MESSAGE_DELIVERED,
    "read": EventType.MESSAGE_READ,
    "failed": EventType.MESSAGE_FAILED,
    "canceled": EventType.MESSAGE_CANCELED,
}
# Statuses whose `reason` is the payload's failure_reason.
WITH_REASON = frozenset({"failed", "canceled"})


def _subscribed(owner_ids: set[int], event_type: str) -> dict[int, list[int]]:
    """Return owner id -> ids of its active endpoints subscribed to `event_type` (one query)."""
    found: dict[int, list[int]] = defaultdict(list)
    for endpoint_id, owner_id, events in WebhookEndpoint.objects.filter(
        owner_id__in=owner_ids, is_active=True
    ).values_list("id", "owner_id", "events"):
        if event_type in events:
            found[owner_id].append(endpoint_id)
    return found


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _record(events: list[WebhookEvent]) -> None:
    WebhookEvent.objects.bulk_create(events)
    endpoint_ids = sorted({event.endpoint_id for event in events})

    def wake() -> None:
        from .delivery import lanes_wake  # the sending side is not needed to record

        lanes_wake(endpoint_ids)

    transaction.on_commit(wake)


def status_changed(change: hooks.StatusChange) -> None:
    """Record a `message.<status>` event for each subscribed endpoint of each business author."""
    event_type = STATUS_EVENTS.get(change.status)
    if event_type is None:
        return
    # A re-sent message (`sent` -> `sent`) is not news.
    rows = [row for row in change.rows if row.sender_id is not None and row.previous != change.status]
    if not rows:
        return
    endpoints = _subscribed({row.sender_id for row in rows}, event_type)
    if not endpoints:
        return
    at = _iso(change.at)
    reason = change.reason if change.status in WITH_REASON else ""
    events = []
    for row in rows:
        data = {
            "message_id": str(row.id),
            "status": change.status,
            "at": at,
            "kind": row.kind,
            "conversation_id": str(row.conversation_id) if row.conversation_id else None,
            "recipient_phone_number": None,  # read when sent (it may be erased meanwhile)
            "failure_reason": reason or None,
        }
        for endpoint_id in endpoints.get(row.sender_id, ()):
            events.append(
                WebhookEvent(
                    endpoint_id=endpoint_id,
                    type=event_type,
                    payload=data,
                    recipient_id=row.recipient_id,
                    created_at=change.at,
                    next_attempt_at=change.at,
                )
            )
    if events:
        _record(events)


def chat_received(event: hooks.ChatReceived) -> None:
    """Record a `chat.message_received` event for each subscribed endpoint of the business user."""
    endpoints = _subscribed({event.business_id}, EventType.CHAT_MESSAGE_RECEIVED)
    if not endpoints:
        return
    data = {
        "message_id": str(event.message_id),
        "status": "queued",
        "at": _iso(event.at),
        "kind": "chat",
        "conversation_id": str(event.conversation_id),
        "recipient_phone_number": None,
        "failure_reason": None,
    }
    _record(
        [
            WebhookEvent(
                endpoint_id=endpoint_id,
                type=EventType.CHAT_MESSAGE_RECEIVED,
                payload=data,
                created_at=event.at,
                next_attempt_at=event.at,
            )
            for endpoint_id in endpoints[event.business_id]
        ]
    )
