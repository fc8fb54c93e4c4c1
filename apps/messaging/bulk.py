"""Writes for volume: batch sends, broadcasts and delivery in chunks.

The services layer for many messages at once (the single-message ones are in services.py).
Sequence numbers are taken the same way as a single send, by incrementing the recipients'
`last_seq` in the transaction that stores the messages, but with one statement for all the
recipients, whose rows are locked in id order so that concurrent batches cannot deadlock.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.accounts import presence
from apps.accounts.models import MobileUser, PartyKind, User
from apps.common import metrics
from apps.common.logging import get_correlation_id
from apps.common.pgcopy import copy_insert, copy_rows
from apps.devices.services import push_schedule
from apps.media.errors import MediaError
from apps.media.services import media_attach

from . import lifecycle, outgoing, services
from .errors import MessagingError
from .models import Broadcast, BroadcastStatus, IdempotencyKey, Kind, Message, Outcome, Priority, Status
from .relay import relay_notify
from .seqs import seqs_take

logger = logging.getLogger(__name__)

BATCH_MAX = 1000
# A lost next-chunk task is restarted by the sweep once the broadcast has not moved for this long.
BROADCAST_STALL = timedelta(seconds=60)


class BatchInvalid(MessagingError):
    """Some items of a batch cannot be stored; `errors` maps their index to field errors."""

    def __init__(self, errors: dict[int, dict[str, list[str]]]) -> None:
        self.errors = errors
        super().__init__("Some messages of the batch are invalid; nothing was stored.")


# --- Batch ----------------------------------------------------------------------------------


class StoredMessage(NamedTuple):
    """A message a batch stored (what its callers read of it)."""

    pk: uuid.UUID
    recipient_id: int
    seq: int | None  # None while scheduled
    content: str
    priority: str


# The columns a batch writes; the others keep their database defaults (nulls, blanks).
BATCH_COLUMNS = (
    "id",
    "kind",
    "sender_id",
    "recipient_id",
    "seq",
    "subject",
    "content",
    "content_type",
    "priority",
    "status",
    "retry_count",
    "next_attempt_at",
    "created_at",
    "failure_reason",
    "ttl_seconds",
    "expires_at",
    "send_at",
    "correlation_id",
)


def messages_send_batch(*, sender: User, items: list[dict]) -> list[StoredMessage]:
    """Store every item of a batch with gapless seqs in one transaction, or none of them.

    `items` are validated one-way sends (OneWayMessageInputSerializer). BatchInvalid, with the
    offending indexes, if a recipient is unknown or an attachment is not the sender's; nothing
    is stored then and no seq is used. Delivery is dispatched in chunks after commit.
    """
    phones = {item["recipient_phone_number"] for item in items}
    now = timezone.now()
    correlation_id = get_correlation_id()
    with transaction.atomic():
        recipient_of = dict(
            MobileUser.objects.filter(phone_number__in=phones, is_active=True).values_list(
                "phone_number", "pk"
            )
        )
        unknown = {
            index: {"recipient_phone_number": [f"No active mobile user has the phone number {phone}."]}
            for index, phone in ((i, item["recipient_phone_number"]) for i, item in enumerate(items))
            if phone not in recipient_of
        }
        if unknown:
            raise BatchInvalid(unknown)
        # Scheduled items take their seqs when they become due (schedule.py), the others now.
        counts = Counter(
            recipient_of[item["recipient_phone_number"]] for item in items if not item.get("send_at")
        )
        next_seq = seqs_take(counts) if counts else {}
        messages: list[StoredMessage] = []
        rows = []
        for item in items:
            recipient_id = recipient_of[item["recipient_phone_number"]]
            ttl = item.get("ttl_seconds")
            send_at = item.get("send_at")
            start = send_at or now
            message = StoredMessage(
                uuid.uuid4(),
                recipient_id,
                None if send_at else next_seq[recipient_id],
                item["content"],
                str(item.get("priority", Priority.NORMAL.value)),
            )
            if not send_at:
                next_seq[recipient_id] += 1
            messages.append(message)
            rows.append(
                (
                    message.pk,
                    Kind.ONE_WAY.value,
                    sender.pk,
                    recipient_id,
                    message.seq,
                    item.get("subject", ""),
                    message.content,
                    str(item.get("content_type", "text")),
                    message.priority,
                    (Status.SCHEDULED if send_at else Status.QUEUED).value,
                    0,
                    start,  # due for the relay at once, or for the promotion at send_at
                    now,
                    "",
                    ttl,
                    start + timedelta(seconds=ttl) if ttl else None,
                    send_at,
                    correlation_id,
                )
            )
        copy_rows(Message, BATCH_COLUMNS, rows)
        _attach_all(sender, items, messages)
        if counts:
            relay_notify()
        if len(counts) < len(items):
            relay_notify(scheduled=True)
        by_priority = Counter(m.priority for m in messages)
        transaction.on_commit(lambda: _count_accepted(by_priority))
    logger.info("message.batch_accepted", extra={"count": len(messages)})
    return messages


def _count_accepted(by_priority: Counter) -> None:
    for priority, count in by_priority.items():
        metrics.messages_accepted(kind=Kind.ONE_WAY.value, priority=priority, count=count)


def messages_send_batch_idempotent(
    *, sender: User, idempotency_key: str, body_hash: str, items: list[dict]
) -> tuple[list[uuid.UUID], bool]:
    """Send a batch once per (sender, key); return its message ids and whether this call stored it.

    The same claim as a single send (services.message_send_idempotent): a replay with the same
    body gets the original ids, another body 422, a concurrent one 409.
    """
    record = services._idempotency_claim(sender=sender, key=idempotency_key, body_hash=body_hash)
    if record.message_id is not None:
        ids = record.batch_ids if record.batch_ids is not None else [str(record.message_id)]
        return [uuid.UUID(pk) for pk in ids], False
    try:
        with transaction.atomic():
            messages = messages_send_batch(sender=sender, items=items)
            IdempotencyKey.objects.filter(pk=record.pk).update(
                message_id=messages[0].pk, batch_ids=[str(m.pk) for m in messages]
            )
    except Exception:
        # Nothing was stored: free the key so that a corrected retry can use it.
        IdempotencyKey.objects.filter(pk=record.pk, message__isnull=True).delete()
        raise
    return [m.pk for m in messages], True


def _attach_all(sender: User, items: list[dict], messages: list[StoredMessage]) -> None:
    errors = {}
    for index, (item, message) in enumerate(zip(items, messages, strict=True)):
        if not item.get("attachment_ids"):
            continue
        try:
            media_attach(
                message=Message(pk=message.pk), uploader=sender, media_ids=list(item["attachment_ids"])
            )
        except MediaError as exc:
            errors[index] = {"attachment_ids": [exc.detail]}
    if errors:
        raise BatchInvalid(errors)


# --- Delivery in chunks ---------------------------------------------------------------------


@dataclass
class ChunkReport:
    sent: int = 0
    offline: int = 0
    failed: int = 0
    skipped: int = 0
    not_due: int = 0
    # Recipients, as (kind, id), whose messages were held because they are offline.
    offline_recipients: list[tuple[str, int]] = field(default_factory=list)


def messages_deliver_chunk(*, message_ids: list[str]) -> ChunkReport:
    """Deliver a chunk of messages: one presence lookup, one status update per outcome.

    Online recipients (mobile or business) get their messages as one frame event each; offline
    ones' messages go `pending` (and mobile users get a push after commit). If the channel
    layer fails (or its breaker is open) the affected messages return to `pending` and the
    error propagates, so the task retries; the pending sweep also picks them up.
    """
    report = ChunkReport()
    if services._strict():
        # Strict ordering holds per message; keep its one-by-one logic.
        for pk in message_ids:
            outcome = services.message_deliver(message_id=pk)
            report.sent += outcome == "sent"
            report.offline += outcome == "offline"
        return report
    messages = outgoing.rows(
        Message.objects.filter(pk__in=message_ids, status__in=(Status.QUEUED, Status.PENDING)).order_by(
            "recipient_business_id", "recipient_id", "seq"
        )
    )
    report.skipped = len(message_ids) - len(messages)
    now = timezone.now()
    expired = [m.pk for m in messages if m.expires_at and m.expires_at <= now]
    if expired:
        report.failed += len(services.messages_fail(Message.objects.filter(pk__in=expired), reason="expired"))
    inactive = [m.pk for m in messages if m.pk not in expired and not m.recipient_is_active]
    if inactive:
        report.failed += len(
            services.messages_fail(Message.objects.filter(pk__in=inactive), reason="recipient deactivated")
        )
    done = set(expired) | set(inactive)
    due_at = now + services.DUE_TOLERANCE
    live = []
    for m in messages:
        if m.pk in done:
            continue
        if m.status == Status.PENDING and m.next_attempt_at and m.next_attempt_at > due_at:
            report.not_due += 1
            continue
        live.append(m)
    online = {
        (kind, user_id)
        for kind in PartyKind.values
        for user_id in presence.online_user_ids((m.party[1] for m in live if m.party[0] == kind), kind=kind)
    }
    offline = [m for m in live if m.party not in online]
    if offline:
        report.offline_recipients = _hold_offline(offline, now=now)
        report.offline = len(offline)
    report.sent = services.messages_write(outgoing.outgoing([m for m in live if m.party in online]))
    return report


def _hold_offline(messages: list[outgoing.Row], *, now) -> list[tuple[str, int]]:
    """Move queued messages of offline recipients to `pending`; push to each mobile one after commit.

    Return the recipients whose messages moved.
    """
    party_of = {m.pk: m.party for m in messages}
    with transaction.atomic():
        moved = lifecycle.transition(
            Message.objects.filter(pk__in=list(party_of), status=Status.QUEUED),
            to=Status.PENDING,
            next_attempt_at=None,
        )
        moved_ids = [m.id for m in moved]
        services._record_attempts(moved_ids, Outcome.OFFLINE, now=now, error="recipient offline")
        recipients = sorted({party_of[pk] for pk in moved_ids})
        for kind, recipient_id in recipients:
            if kind == PartyKind.MOBILE:  # business users have no devices to wake
                transaction.on_commit(lambda rid=recipient_id: push_schedule(recipient_id=rid))
    return recipients


# --- Broadcasts -----------------------------------------------------------------------------


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
    from .tasks import expand_broadcast

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
    now = timezone.now()
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
            status=BroadcastStatus.EXPANDING, updated_at__lt=timezone.now() - BROADCAST_STALL
        ).values_list("pk", "expanded_through")[:100]
    )
    for pk, cursor in stalled:
        # A duplicate of a task still alive is harmless: the cursor lets only one of them act.
        _enqueue_expand(pk, cursor)
    return len(stalled)
