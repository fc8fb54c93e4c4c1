"""Writes: registering, changing and removing webhook endpoints, rotating secrets, redelivering,
and purging old events (retention).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from django.db import transaction
from django.db.models import Q

from apps.accounts.models import User
from apps.common import clock
from apps.messaging.services.retention import purge_in_chunks

from . import addresses
from .errors import EndpointInactive, WebhookUrlRefused
from .models import EventStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent
from .signing import secret_new

logger = logging.getLogger(__name__)

PURGE_CHUNK = 1000


def _url_checked(url: str) -> str:
    try:
        addresses.url_check(url)
    except addresses.AddressRefused as exc:
        raise WebhookUrlRefused(f"url: {exc}.") from exc
    return url


def endpoint_create(
    *, owner: User, url: str, events: Sequence[str], description: str = ""
) -> WebhookEndpoint:
    """Register `url` for `events` of `owner`'s messages, with a fresh secret."""
    return WebhookEndpoint.objects.create(
        owner=owner,
        url=_url_checked(url),
        events=list(dict.fromkeys(events)),
        description=description,
        secret=secret_new(),
    )


def endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    events: Sequence[str] | None = None,
    description: str | None = None,
    is_active: bool | None = None,
) -> WebhookEndpoint:
    """Change the given fields; reactivating clears the failure history and wakes delivery."""
    changes: dict = {}
    if url is not None:
        # A new address gets its first attempt now, not when the old one's pause ends.
        changes.update(url=_url_checked(url), paused_until=None)
    if events is not None:
        changes["events"] = list(dict.fromkeys(events))
    if description is not None:
        changes["description"] = description
    if is_active is not None:
        changes["is_active"] = is_active
        if is_active and not endpoint.is_active:
            changes.update(failing_since=None, paused_until=None, deactivated_at=None)
    if changes:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(**changes)
        if changes.get("is_active") or "url" in changes:
            _wake_on_commit(endpoint.pk)
    endpoint.refresh_from_db()
    return endpoint


def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """Remove the endpoint with its events and attempts."""
    endpoint.delete()


def secret_rotate(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Give the endpoint a new secret; the events sent from now on are signed with it."""
    endpoint.secret = secret_new()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(secret=endpoint.secret)
    return endpoint


def event_redeliver(*, delivery: WebhookDelivery) -> WebhookEvent:
    """Send the event of `delivery` once more, now, whatever became of it (delivered or given up).

    An event that had used up its attempts gets this one attempt; one still being retried is
    simply tried now. The endpoint's pause (unreachable receiver) is lifted: the sender asks.
    """
    endpoint = WebhookEndpoint.objects.get(pk=delivery.endpoint_id)
    if not endpoint.is_active:
        raise EndpointInactive()
    now = clock.now()
    with transaction.atomic():
        WebhookEvent.objects.filter(pk=delivery.event_id).update(
            status=EventStatus.PENDING, next_attempt_at=now, delivered_at=None
        )
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(paused_until=None)
        _wake_on_commit(endpoint.pk)
    return WebhookEvent.objects.get(pk=delivery.event_id)


def events_redeliver(*, event_ids: Sequence[int]) -> int:
    """Send these events once more, now (admin action); return how many were set to go."""
    now = clock.now()
    with transaction.atomic():
        events = WebhookEvent.objects.filter(pk__in=event_ids, endpoint__is_active=True)
        endpoint_ids = sorted(set(events.values_list("endpoint_id", flat=True)))
        count = events.update(status=EventStatus.PENDING, next_attempt_at=now, delivered_at=None)
        WebhookEndpoint.objects.filter(pk__in=endpoint_ids).update(paused_until=None)
        for endpoint_id in endpoint_ids:
            _wake_on_commit(endpoint_id)
    return count


def _wake_on_commit(endpoint_id: int) -> None:
    from .delivery import lanes_wake

    transaction.on_commit(lambda: lanes_wake([endpoint_id]))


# --- retention ------------------------------------------------------------------------------

# Events nothing will send again: delivered, given up, or waiting for an endpoint that was
# deactivated. Pending events of an active endpoint are still being retried and stay.
_SETTLED = Q(status__in=(EventStatus.DELIVERED, EventStatus.GIVEN_UP)) | Q(endpoint__is_active=False)


def events_purge_chunk(*, cutoff: datetime, limit: int = PURGE_CHUNK) -> int:
    """Delete at most `limit` settled events created before `cutoff`, with their attempts; return how many.

    One transaction that claims its rows with a lock other runs skip: two beats share the work.
    Oldest first by primary key (it follows creation), so the claim needs no index of its own.
    """
    with transaction.atomic():
        ids = list(
            WebhookEvent.objects.filter(_SETTLED, created_at__lt=cutoff)
            .order_by("pk")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return 0
        WebhookEvent.objects.filter(pk__in=ids).delete()  # their attempts cascade
    return len(ids)


def events_purge_expired(*, chunk: int = PURGE_CHUNK, max_chunks: int | None = None) -> int:
    """Purge settled events older than MESSAGING_RETENTION_DAYS, `chunk` per transaction; return how many."""
    purged, cutoff = purge_in_chunks(events_purge_chunk, chunk=chunk, max_chunks=max_chunks)
    if purged:
        logger.info("webhook.events_purged", extra={"count": purged, "cutoff": cutoff.isoformat()})
    return purged
