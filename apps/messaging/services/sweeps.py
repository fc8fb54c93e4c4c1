"""Periodic sweeps: ack timeouts, pending messages of online users, expiry, stale connections.

Each claims its rows with a compare-and-set (lifecycle.transition), so it is safe to run twice
or on two beats at once.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F

from apps.accounts import presence
from apps.accounts.party import Party
from apps.common import clock
from apps.common.backoff import retries_exhausted, retry_delay

from .. import lifecycle
from ..dispatch import messages_dispatch
from ..models import (
    Message,
    Outcome,
    Status,
)
from ..selectors import (
    pending_recipients_due,
)
from .failures import messages_fail, messages_release_unacked

logger = logging.getLogger(__name__)


def sweep_ack_timeouts(*, limit: int | None = None) -> int:
    """Count `sent` messages whose ack deadline passed as failed attempts; retry or fail them."""
    now = clock.now()
    limit = limit or settings.MESSAGING_SWEEP_BATCH
    due = list(
        Message.objects.filter(status=Status.SENT, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", "retry_count")[:limit]
    )
    by_count: dict[int, list[uuid.UUID]] = defaultdict(list)
    for pk, count in due:
        by_count[count].append(pk)
    timeout = settings.MESSAGING_ACK_TIMEOUT_SECONDS
    handled = 0
    for count, ids in by_count.items():
        # Repeating the conditions makes this a compare-and-set: an ack or another sweep
        # that got there first leaves nothing to move.
        still_due = Message.objects.filter(
            pk__in=ids, status=Status.SENT, retry_count=count, next_attempt_at__lte=now
        )
        if retries_exhausted(count):
            handled += len(
                messages_fail(
                    still_due,
                    reason=f"no ack after {count + 1} attempts ({timeout:g} s each)",
                    attempt_outcome=Outcome.TIMEOUT,
                )
            )
            continue
        delay = retry_delay(count + 1, jitter=True)
        with transaction.atomic():
            moved = lifecycle.transition(
                still_due,
                to=Status.PENDING,
                now=now,
                reason="ack timeout",
                retry_count=F("retry_count") + 1,
                next_attempt_at=now + timedelta(seconds=delay),
                close_attempts=lifecycle.CloseAttempts(Outcome.TIMEOUT, f"no ack within {timeout:g} s"),
            )
            moved_ids = [m.id for m in moved]
            rows = list(Message.objects.filter(pk__in=moved_ids).values_list("pk", "priority"))
            transaction.on_commit(lambda rows=rows, delay=delay: messages_dispatch(rows, countdown=delay))
        handled += len(moved_ids)
    return handled


def sweep_pending(*, limit: int | None = None) -> int:
    """Dispatch a backlog delivery for each online recipient with `pending` messages due."""
    from ..tasks import deliver_backlog

    recipients = pending_recipients_due_online(limit=limit or settings.MESSAGING_SWEEP_BATCH)
    for recipient in recipients:
        deliver_backlog.delay(recipient.id, recipient.kind.value)
    return len(recipients)


def pending_recipients_due_online(*, limit: int) -> list[Party]:
    """Return the recipients with due `pending` messages that are online now."""
    candidates = pending_recipients_due(limit=limit)
    online = presence.online_parties(candidates)
    return [party for party in candidates if party in online]


def sweep_expired(*, limit: int | None = None) -> int:
    """Fail undelivered messages whose TTL has passed (reason `expired`)."""
    now = clock.now()
    ids = list(
        Message.objects.filter(
            status__in=(Status.QUEUED, Status.PENDING, Status.SENT), expires_at__lte=now
        ).values_list("pk", flat=True)[: limit or settings.MESSAGING_SWEEP_BATCH]
    )
    if not ids:
        return 0
    return len(messages_fail(Message.objects.filter(pk__in=ids, expires_at__lte=now), reason="expired"))


def sweep_stale_connections() -> int:
    """Mark connections without a heartbeat offline and release their unacked messages."""
    offline, dropped = presence.stale_connections()
    released = messages_release_unacked(recipients=offline, reason="connection went stale")
    if offline or dropped:
        logger.info(
            "presence.stale_sweep",
            extra={"offline_users": len(offline), "dropped_records": dropped, "released": len(released)},
        )
    return len(released)
