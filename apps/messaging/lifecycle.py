"""The one owner of `Message.status`: the transition table and its compare-and-set update.

Nothing else in the code base writes `status`. A transition moves the messages of a queryset
whose current status is an allowed source of the target; the others are left alone, so a
late or duplicated step (an ack after a timeout, a sweep run twice, two workers racing) can
never move a message backwards.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction
from django.db.models import QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import Message, Status

logger = logging.getLogger(__name__)

# Target status -> the statuses it may be reached from.
ALLOWED_SOURCES: dict[str, frozenset[str]] = {
    # Only an explicit requeue of a dead letter goes back to the start.
    Status.QUEUED: frozenset({Status.FAILED}),
    # Recipient offline, ack timed out (retry later) or its connection went stale.
    Status.PENDING: frozenset({Status.QUEUED, Status.SENT}),
    # Written to a socket; re-writing a `sent` message restarts its ack clock.
    Status.SENT: frozenset({Status.QUEUED, Status.PENDING, Status.SENT}),
    # The device's ack can overtake the worker's own bookkeeping.
    Status.DELIVERED: frozenset({Status.QUEUED, Status.PENDING, Status.SENT}),
    Status.READ: frozenset({Status.QUEUED, Status.PENDING, Status.SENT, Status.DELIVERED}),
    Status.FAILED: frozenset({Status.QUEUED, Status.PENDING, Status.SENT}),
}

TERMINAL = frozenset({Status.READ, Status.FAILED})


class InvalidTransition(ValueError):
    pass


def can_transition(source: str, target: str) -> bool:
    """Return whether a message in `source` may move to `target`."""
    return source in ALLOWED_SOURCES.get(target, ())


@dataclass(frozen=True)
class Moved:
    id: uuid.UUID
    previous: str


def _stamps(target: str, now: datetime, reason: str) -> dict:
    if target == Status.SENT:
        return {"sent_at": now}
    if target == Status.DELIVERED:
        return {"delivered_at": now, "next_attempt_at": None}
    if target == Status.READ:
        # Read implies delivered: keep an earlier delivered_at, else stamp it now.
        return {
            "read_at": now,
            "delivered_at": Coalesce("delivered_at", Value(now)),
            "next_attempt_at": None,
        }
    if target == Status.FAILED:
        return {"failed_at": now, "failure_reason": reason[:500], "next_attempt_at": None}
    if target == Status.QUEUED:
        return {"failed_at": None, "failure_reason": "", "retry_count": 0}
    return {}


def transition(
    messages: QuerySet[Message],
    *,
    to: str,
    reason: str = "",
    now: datetime | None = None,
    **changes,
) -> list[Moved]:
    """Move the messages of `messages` that may reach `to` there; return those that moved.

    `changes` are further column updates made in the same statement (e.g. `next_attempt_at`).
    Rows are locked in primary-key order, so concurrent bulk transitions cannot deadlock, and
    the update repeats the status condition, so it stays a compare-and-set on any database.
    """
    if to not in ALLOWED_SOURCES:
        raise InvalidTransition(f"unknown status {to!r}")
    if "status" in changes:
        raise InvalidTransition("the target status is given by `to`")
    sources = ALLOWED_SOURCES[to]
    now = now or timezone.now()
    with transaction.atomic():
        rows = list(
            messages.filter(status__in=sources).select_for_update().order_by("pk").values_list("pk", "status")
        )
        if not rows:
            return []
        ids = [pk for pk, _ in rows]
        updated = Message.objects.filter(pk__in=ids, status__in=sources).update(
            status=to, **_stamps(to, now, reason), **changes
        )
    moved = [Moved(pk, previous) for pk, previous in rows]
    if updated != len(moved):  # only possible without row locks (SQLite); the CAS still held
        logger.warning("message.transition_raced", extra={"expected": len(moved), "updated": updated})
    for item in moved:
        logger.info(
            "message.status",
            extra={"message_id": str(item.id), "from": item.previous, "to": to, "reason": reason},
        )
    return moved


def transition_one(message_id: uuid.UUID | str, *, to: str, **kwargs) -> bool:
    """Move one message; return whether it moved."""
    return bool(transition(Message.objects.filter(pk=message_id), to=to, **kwargs))
