"""Broadcasts: one content to many mobile users, expanded into messages by chunked tasks."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Max

from apps.accounts.models import MobileUser, User
from apps.common import clock, metrics
from apps.common.logging import get_correlation_id
from apps.common.pgcopy import copy_insert

from ..models import Broadcast, BroadcastStatus, Kind, Message, Priority, Status
from ..relay import relay_notify
from .seqs import seqs_take

logger = logging.getLogger(__name__)


# A lost next-chunk task is restarted by the sweep once the broadcast has not moved for this long.
BROADCAST_STALL = timedelta(seconds=60)


def broadcast_audience(*, recipient_phone_numbers: list[str] | None) -> tuple[list[int] | None, list[str]]:
    """Resolve a broadcast's phone numbers to active users' ids; return (ids, unknown numbers).

    None for everyone (`"all": true`).
    """
    if recipient_phone_numbers is None:
        return None, []
    phones = list(dict.fromkeys(recipient_phone_numbers))
    known = dict(
        MobileUser.objects.filter(phone_number__in=phones, is_active=True).values_list("phone_number", "pk")
    )
    return sorted(known.values()), [p for p in phones if p not in known]


def active_audience_size() -> int:
    """Return how many mobile users `"all": true` reaches now."""
    return MobileUser.objects.filter(is_active=True).count()


def broadcast_create(
    *,
    sender: User,
    recipient_ids: list[int] | None,
    content: str,
    subject: str = "",
    content_type: str = "text",
    priority: str = Priority.NORMAL,
    ttl_seconds: int | None = None,
    send_at: datetime | None = None,
) -> Broadcast:
    """Record a broadcast to `recipient_ids` (None: every active user now); expand it after commit."""
    with transaction.atomic():
        if recipient_ids is None:
            max_id = MobileUser.objects.aggregate(m=Max("pk"))["m"] or 0
            total = MobileUser.objects.filter(is_active=True, pk__lte=max_id).count()
        else:
            max_id, total = None, len(recipient_ids)
        broadcast = Broadcast.objects.create(
            sender=sender,
            subject=subject,
            content=content,
            content_type=content_type,
            priority=priority,
            ttl_seconds=ttl_seconds,
            send_at=send_at,
            all_users=recipient_ids is None,
            recipient_ids=recipient_ids or [],
            audience_max_id=max_id,
            total=total,
            correlation_id=get_correlation_id(),
        )
        transaction.on_commit(lambda: _enqueue_expand(broadcast.pk, 0))
    logger.info("broadcast.accepted", extra={"broadcast_id": str(broadcast.pk), "total": total})
    return broadcast


def _enqueue_expand(broadcast_id: uuid.UUID, after: int) -> None:
    from ..tasks import expand_broadcast

    try:
        expand_broadcast.apply_async(args=[str(broadcast_id), after], queue="default")
    except Exception as exc:  # noqa: BLE001 - the broadcast sweep restarts a stalled expansion
        logger.warning(
            "broadcast.dispatch_failed", extra={"broadcast_id": str(broadcast_id), "error": repr(exc)}
        )


def broadcast_expand_chunk(*, broadcast_id: str | uuid.UUID, after: int) -> int | None:
    """Create the messages of the next chunk of the audience after recipient id `after`.

    The chunk is claimed by a compare-and-set of the broadcast's `expanded_through` cursor, in
    the transaction that stores its messages: a task run twice, or a stale one, finds the
    cursor moved and creates nothing. Return the new cursor if more remains (its task is
    enqueued after commit), else None.
    """
    # Due times and expiries are compared on the shared clock (apps/common/clock.py).
    now = clock.now()
    with transaction.atomic():
        broadcast = Broadcast.objects.select_for_update().filter(pk=broadcast_id).first()
        if (
            broadcast is None
            or broadcast.status != BroadcastStatus.EXPANDING
            or broadcast.expanded_through != after
        ):
            return None
        audience = MobileUser.objects.filter(is_active=True, pk__gt=after)
        if broadcast.all_users:
            audience = audience.filter(pk__lte=broadcast.audience_max_id)
        else:
            audience = audience.filter(pk__in=broadcast.recipient_ids)
        size = settings.MESSAGING_BROADCAST_CHUNK
        recipient_ids = list(audience.order_by("pk").values_list("pk", flat=True)[:size])
        messages = []
        scheduled = broadcast.send_at is not None
        if recipient_ids:
            # Scheduled: the messages take their seqs when they become due (schedule.py).
            first_seq = {} if scheduled else seqs_take(dict.fromkeys(recipient_ids, 1))
            ttl = broadcast.ttl_seconds
            start = broadcast.send_at or now
            messages = [
                Message(
                    kind=Kind.ONE_WAY,
                    sender_id=broadcast.sender_id,
                    recipient_id=rid,
                    seq=first_seq.get(rid),
                    subject=broadcast.subject,
                    content=broadcast.content,
                    content_type=broadcast.content_type,
                    priority=broadcast.priority,
                    status=Status.SCHEDULED if scheduled else Status.QUEUED,
                    next_attempt_at=start,  # due for the relay at once, or at send_at
                    ttl_seconds=ttl,
                    expires_at=start + timedelta(seconds=ttl) if ttl else None,
                    send_at=broadcast.send_at,
                    correlation_id=broadcast.correlation_id,
                    broadcast=broadcast,
                )
                for rid in recipient_ids
            ]
            copy_insert(messages)
        more = len(recipient_ids) == size
        cursor = recipient_ids[-1] if recipient_ids else after
        changes = {
            "expanded_through": cursor,
            "expanded": broadcast.expanded + len(messages),
            "updated_at": now,
        }
        if not more:
            changes.update(status=BroadcastStatus.EXPANDED, expanded_at=now)
        Broadcast.objects.filter(pk=broadcast.pk, expanded_through=after).update(**changes)
        if messages:
            relay_notify(scheduled=scheduled)
            count, priority = len(messages), str(broadcast.priority)
            transaction.on_commit(
                lambda: metrics.messages_accepted(kind=Kind.ONE_WAY.value, priority=priority, count=count)
            )
        if more:
            transaction.on_commit(lambda: _enqueue_expand(broadcast.pk, cursor))
    logger.info("broadcast.expanded_chunk", extra={"broadcast_id": str(broadcast_id), "count": len(messages)})
    return cursor if more else None


def sweep_broadcasts() -> int:
    """Restart the expansion of broadcasts that have not moved for a while (lost task)."""
    stalled = list(
        Broadcast.objects.filter(
            status=BroadcastStatus.EXPANDING, updated_at__lt=clock.now() - BROADCAST_STALL
        ).values_list("pk", "expanded_through")[:100]
    )
    for pk, cursor in stalled:
        # A duplicate of a task still alive is harmless: the cursor lets only one of them act.
        _enqueue_expand(pk, cursor)
    return len(stalled)
