"""Writes for messaging: sending, delivering, acknowledging, retrying, dead-lettering.

Every status change goes through `lifecycle.transition`. Every task is enqueued after the
transaction that made it necessary has committed, and every sweep claims its rows with a
conditional update, so each function here is safe to run twice or on two machines at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Prefetch, Q, QuerySet, prefetch_related_objects
from django.utils import timezone

from apps.accounts import presence
from apps.accounts.models import MobileUser, PartyKind, User
from apps.common import bridge, metrics
from apps.common.backoff import retries_exhausted, retry_delay
from apps.common.logging import get_correlation_id
from apps.common.pgcopy import copy_insert
from apps.devices.services import push_schedule
from apps.media.models import Media
from apps.media.services import media_attach

from . import hooks, lifecycle, outgoing, schedule
from .dispatch import messages_dispatch
from .errors import IdempotencyKeyInFlight, IdempotencyKeyMismatch, RecipientNotFound
from .models import (
    Channel,
    DeadLetter,
    DeliveryAttempt,
    IdempotencyKey,
    Kind,
    Message,
    Outcome,
    Priority,
    Status,
)
from .outgoing import Outgoing
from .relay import relay_notify
from .selectors import (
    has_earlier_undelivered,
    inbox,
    parse_uuid,
    pending_recipients_due,
    undelivered_for_recipient,
    with_parties,
)

logger = logging.getLogger(__name__)

# Task functions are imported where they are used: tasks.py imports this module.
# A claimed Idempotency-Key whose request never finished may be taken over after this long.
IDEMPOTENCY_LEASE = timedelta(seconds=60)
# A retry scheduled with a countdown may run a hair before its recorded due time.
DUE_TOLERANCE = timedelta(milliseconds=500)


def _strict() -> bool:
    return settings.MESSAGING_ORDERING == "strict"


def _ack_deadline(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.MESSAGING_ACK_TIMEOUT_SECONDS)


# --- Sending --------------------------------------------------------------------------------


def message_send(
    *,
    sender: User,
    recipient_phone_number: str,
    content: str,
    subject: str = "",
    content_type: str = "text",
    priority: str = Priority.NORMAL,
    ttl_seconds: int | None = None,
    attachment_ids: Iterable[uuid.UUID] = (),
    send_at: datetime | None = None,
) -> Message:
    """Persist a one-way message with the recipient's next `seq`; the relay dispatches it.

    `attachment_ids` name the sender's unattached uploads (already stored, so the message
    can go at once); MediaNotFound if one is not, and nothing is stored then. With `send_at`
    the message is stored `scheduled`, without a seq, until then (schedule.py).
    """
    message = Message(
        kind=Kind.ONE_WAY,
        sender=sender,
        subject=subject,
        content=content,
        content_type=content_type,
        priority=priority,
        ttl_seconds=ttl_seconds,
        send_at=send_at,
    )
    recipient = MobileUser(phone_number=recipient_phone_number)
    stored = _message_store(
        message,
        recipient=recipient,
        where=("phone_number", recipient_phone_number),
        uploader=sender,
        attachment_ids=attachment_ids,
    )
    if not stored:
        raise RecipientNotFound(f"No active mobile user has the phone number {recipient_phone_number}.")
    return message


def chat_message_store(
    *,
    conversation_id: uuid.UUID,
    author: User | MobileUser,
    recipient: User | MobileUser,
    content: str,
    content_type: str = "text",
    attachment_ids: Iterable[uuid.UUID] = (),
) -> Message:
    """Persist a chat message with the recipient's next `seq` (its own stream); the relay dispatches it.

    Runs in the caller's transaction, which owns the conversation (conversations.services).
    Raise RecipientNotFound when the recipient was deactivated: nothing is stored then.
    """
    by_mobile = author.party_kind == PartyKind.MOBILE
    message = Message(
        kind=Kind.CHAT,
        conversation_id=conversation_id,
        sender=None if by_mobile else author,
        sender_mobile=author if by_mobile else None,
        content=content,
        content_type=content_type,
        # Someone is waiting for the answer: chat takes the fast lane.
        priority=Priority.HIGH,
    )
    if not _message_store(
        message,
        recipient=recipient,
        where=("id", recipient.pk),
        uploader=author,
        attachment_ids=attachment_ids,
    ):
        raise RecipientNotFound("The other participant of this conversation is no longer active.")
    if by_mobile:
        hooks.chat_received(hooks.ChatReceived(message.pk, recipient.pk, conversation_id, message.created_at))
    return message


def _message_store(
    message: Message,
    *,
    recipient: User | MobileUser,
    where: tuple[str, object],
    uploader: User | MobileUser,
    attachment_ids: Iterable[uuid.UUID],
) -> bool:
    """Insert `message` as `queued` with the next `seq` of the active recipient matching `where`.

    Return False (nothing stored) when no active recipient matches. The seq is taken by
    incrementing the recipient's `last_seq` in the statement that inserts the message: the
    increment locks the recipient's row until commit, so concurrent sends to one recipient take
    consecutive numbers and a rollback leaves no gap. Without attachments this is one statement
    (in autocommit, its own transaction); with them, one transaction with the attaching.
    A message with `send_at` is inserted `scheduled`, due then, and takes no seq yet.
    """
    now = timezone.now()
    scheduled = message.send_at is not None
    message.status = Status.SCHEDULED if scheduled else Status.QUEUED
    # Due for the relay at once, or for the promotion at send_at; TTL counts from then.
    message.next_attempt_at = start = message.send_at or now
    message.created_at = now
    message.expires_at = start + timedelta(seconds=message.ttl_seconds) if message.ttl_seconds else None
    message.correlation_id = get_correlation_id()
    media_ids = list(attachment_ids)
    with transaction.atomic() if media_ids else nullcontext():
        found = _insert_with_next_seq(message, recipient=recipient, where=where, take_seq=not scheduled)
        if not found:
            return False
        media_attach(message=message, uploader=uploader, media_ids=media_ids)
        relay_notify(scheduled=scheduled)
        kind, priority = str(message.kind), str(message.priority)
        transaction.on_commit(lambda: metrics.messages_accepted(kind=kind, priority=priority))
    if not media_ids:
        # Nothing attached: the caller's representation needs no query to learn that.
        prefetch_related_objects([message], Prefetch("attachments", queryset=Media.objects.none()))
    logger.info("message.accepted", extra={"message_id": str(message.pk), "seq": message.seq})
    return True


def _insert_with_next_seq(
    message: Message, *, recipient: User | MobileUser, where: tuple[str, object], take_seq: bool = True
) -> bool:
    """Take the recipient's next seq and insert `message` with it; return whether a recipient matched.

    Without `take_seq` (a scheduled message) the recipient is only looked up, and seq stays null.
    """
    model = type(recipient)
    column, value = where
    fk = "recipient_id" if model is MobileUser else "recipient_business_id"
    if connection.vendor != "postgresql":
        with transaction.atomic():
            active = model.objects.filter(**{column: value}, is_active=True)
            if take_seq and not active.update(last_seq=F("last_seq") + 1):
                return False
            found = model.objects.filter(**{column: value}) if take_seq else active
            pk, seq = found.values_list("pk", "last_seq").first() or (None, None)
            if pk is None:
                return False
            seq = seq if take_seq else None
            setattr(message, fk, pk)
            message.seq = seq
            message.save(force_insert=True)
        _remember_recipient(message, recipient, pk)
        return True
    fields = [f for f in Message._meta.concrete_fields if f.attname not in (fk, "seq")]
    values = [f.get_db_prep_save(f.pre_save(message, add=True), connection) for f in fields]
    columns = ", ".join(f'"{f.column}"' for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    table = model._meta.db_table
    recipient_sql = (
        f'UPDATE "{table}" SET last_seq = last_seq + 1 WHERE "{column}" = %s AND is_active'
        " RETURNING id, last_seq"
        if take_seq
        else f'SELECT id, NULL::bigint AS last_seq FROM "{table}" WHERE "{column}" = %s AND is_active'
    )
    sql = (
        f"WITH r AS ({recipient_sql})"
        f' INSERT INTO "{Message._meta.db_table}" ({columns}, "{fk}", "seq")'
        f' SELECT {placeholders}, r.id, r.last_seq FROM r RETURNING "{fk}", seq'
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value, *values])
        row = cursor.fetchone()
    if row is None:
        return False
    setattr(message, fk, row[0])
    message.seq = row[1]
    message._state.adding = False
    message._state.db = connection.alias
    _remember_recipient(message, recipient, row[0])
    return True


def _remember_recipient(message: Message, recipient: User | MobileUser, pk: int) -> None:
    # What the send's answer shows of the recipient (its phone number) is known: no query.
    if recipient.pk is None:
        recipient.pk = pk
    field = "recipient" if isinstance(recipient, MobileUser) else "recipient_business"
    setattr(message, field, recipient)


def request_hash(payload: dict) -> str:
    """Return a stable hash of a request body, for Idempotency-Key comparison."""
    # An explicit null means the same as an absent field.
    present = {k: v for k, v in payload.items() if v is not None}
    canonical = json.dumps(present, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def message_send_idempotent(
    *, sender: User, idempotency_key: str, body_hash: str, **send_kwargs
) -> tuple[Message, bool]:
    """Send once per (sender, key); return the message and whether this call created it.

    The key is claimed in its own committed row before the message is stored, so a concurrent
    request with the same key sees the claim and gets 409 instead of a second message.
    """
    record = _idempotency_claim(sender=sender, key=idempotency_key, body_hash=body_hash)
    if record.message_id is not None:
        return record.message, False
    try:
        with transaction.atomic():
            message = message_send(sender=sender, **send_kwargs)
            IdempotencyKey.objects.filter(pk=record.pk).update(message=message)
    except Exception:
        # Nothing was stored: free the key so that a corrected retry can use it.
        IdempotencyKey.objects.filter(pk=record.pk, message__isnull=True).delete()
        raise
    return message, True


def _idempotency_claim(*, sender: User, key: str, body_hash: str) -> IdempotencyKey:
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(sender=sender, key=key, request_hash=body_hash)
    except IntegrityError:
        pass
    record = IdempotencyKey.objects.select_related("message", "message__recipient").get(
        sender=sender, key=key
    )
    if record.request_hash != body_hash:
        raise IdempotencyKeyMismatch()
    if record.message_id is not None:
        return record
    now = timezone.now()
    if record.created_at > now - IDEMPOTENCY_LEASE:
        raise IdempotencyKeyInFlight()
    # The first request died before storing anything: take the claim over.
    taken = IdempotencyKey.objects.filter(
        pk=record.pk, message__isnull=True, created_at=record.created_at
    ).update(created_at=now)
    if not taken:
        raise IdempotencyKeyInFlight()
    return record


# --- Delivering -----------------------------------------------------------------------------


def message_deliver(*, message_id: str | uuid.UUID) -> str:
    """Try to deliver one message now; return what happened (for logs and tests)."""
    message = (
        with_parties(Message.objects.filter(pk=message_id))
        .select_related("recipient", "recipient_business")
        .first()
    )
    if message is None or message.status not in (Status.QUEUED, Status.PENDING):
        return "skipped"
    now = timezone.now()
    if message.expires_at and message.expires_at <= now:
        messages_fail(Message.objects.filter(pk=message.pk), reason="expired")
        return "expired"
    kind, recipient_id = message.recipient_party
    if not (message.recipient or message.recipient_business).is_active:
        # Permanent: retrying cannot help, so it goes to the dead letters at once.
        messages_fail(Message.objects.filter(pk=message.pk), reason="recipient deactivated")
        return "failed"
    if (
        message.status == Status.PENDING
        and message.next_attempt_at
        and message.next_attempt_at > now + DUE_TOLERANCE
    ):
        return "not_due"
    if _strict() and has_earlier_undelivered(message=message):
        # Due as soon as the earlier one is acked, which enqueues the recipient's backlog.
        lifecycle.transition(
            Message.objects.filter(pk=message.pk, status=Status.QUEUED),
            to=Status.PENDING,
            next_attempt_at=None,
        )
        return "held"
    if not presence.is_online(recipient_id, kind):
        with transaction.atomic():
            moved = lifecycle.transition(
                Message.objects.filter(pk=message.pk, status=Status.QUEUED),
                to=Status.PENDING,
                next_attempt_at=None,
            )
            if moved:
                _record_attempts([message.pk], Outcome.OFFLINE, now=now, error="recipient offline")
                if kind == PartyKind.MOBILE:  # business users have no devices to wake
                    transaction.on_commit(lambda: push_schedule(recipient_id=recipient_id))
        return "offline"
    messages_write(outgoing.outgoing(outgoing.rows(Message.objects.filter(pk=message.pk))))
    return "sent"


def recipient_deliver_backlog(*, recipient_id: int, kind: str = PartyKind.MOBILE) -> int:
    """Write the recipient's due `pending` messages to its connections, in seq order.

    In strict mode only the first undelivered message goes, and only when nothing is in flight.
    Return how many were written.
    """
    if not presence.is_online(recipient_id, kind):
        return 0
    now = timezone.now()
    undelivered = undelivered_for_recipient(recipient_id=recipient_id, kind=kind)
    if _strict():
        first = next(iter(outgoing.rows(undelivered[:1])), None)
        if first is None or first.status == Status.SENT:
            return 0
        if first.status == Status.PENDING and first.next_attempt_at and first.next_attempt_at > now:
            return 0
        batch = [first]
    else:
        batch = [
            m
            for m in outgoing.rows(
                undelivered.filter(status=Status.PENDING)[: settings.MESSAGING_CATCHUP_CHUNK]
            )
            if m.next_attempt_at is None or m.next_attempt_at <= now
        ]
    if batch:
        messages_write(outgoing.outgoing(batch))
    return len(batch)


def messages_write(messages: list[Outgoing]) -> int:
    """Mark `messages` sent in one update, then send one event per recipient; return how many.

    The bookkeeping comes first so that the device's ack, however fast, always finds the
    message `sent` with its attempt recorded. If the channel layer is unreachable, the messages
    not yet written go back to `pending` and the error propagates, so the caller's task retries.
    """
    if not messages:
        return 0
    moved = messages_mark_sent([m.pk for m in messages])
    by_group: dict[str, list[Outgoing]] = defaultdict(list)
    for m in messages:
        if m.pk in moved:
            by_group[m.group].append(m)
    correlation_id = get_correlation_id()
    groups = list(by_group)
    events = [
        (
            group,
            {
                "type": "deliver.messages",
                # Encoded once (outgoing.encode_frame): each socket writes the text as it is.
                "messages": [{"id": str(m.pk), "frame": m.frame} for m in by_group[group]],
                "correlation_id": correlation_id,
            },
        )
        for group in groups
    ]
    unsent: list[uuid.UUID] = []
    error: BaseException | None = None
    try:
        outcomes = bridge.group_send_many(events)
    except Exception as exc:  # noqa: BLE001 - re-raised below, after the bookkeeping
        error, outcomes = exc, [exc] * len(groups)
    for group, outcome in zip(groups, outcomes, strict=True):
        if outcome is not None:
            error = error or outcome
            unsent += [m.pk for m in by_group[group]]
    if error is not None:
        with transaction.atomic():
            back = lifecycle.transition(
                Message.objects.filter(pk__in=unsent, status=Status.SENT),
                to=Status.PENDING,
                reason="channel layer unavailable",
                next_attempt_at=None,
            )
            _close_open_attempts([m.id for m in back], Outcome.ERROR, error=f"channel layer: {error!r}"[:500])
        raise error
    return len(moved)


def messages_mark_sent(message_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Move the messages to `sent` with a fresh ack deadline; record the attempts."""
    now = timezone.now()
    with transaction.atomic():
        moved = lifecycle.transition(
            Message.objects.filter(pk__in=message_ids),
            to=Status.SENT,
            now=now,
            next_attempt_at=_ack_deadline(now),
        )
        ids = {m.id for m in moved}
        _record_attempts(ids, Outcome.SENT, now=now)
    return ids


def catchup_chunk(
    *, recipient_id: int, after_seq: int, limit: int, kind: str = PartyKind.MOBILE
) -> tuple[list[Outgoing], int | None]:
    """Claim the next chunk of the recipient's undelivered messages for a (re)connected socket.

    Return their encoded frames in seq order, with a `skip` frame for each canceled seq among
    them (schedule.skips_for_catchup), and the last seq looked at (None when done). The
    messages are marked `sent` before the caller writes them: a write that fails is caught by
    the ack timeout like any other lost frame.
    """
    if _strict():
        if after_seq:
            return [], None
        limit = 1
    batch = outgoing.rows(
        undelivered_for_recipient(recipient_id=recipient_id, after_seq=after_seq, kind=kind)[:limit]
    )
    # The last chunk (short) explains every canceled seq after it; a full one, those it spans.
    through = batch[-1].seq if len(batch) == limit else None
    skips = schedule.skips_for_catchup(
        recipient_id=recipient_id, kind=kind, after_seq=after_seq, through_seq=through
    )
    if not batch and not skips:
        return [], None
    moved = messages_mark_sent([m.pk for m in batch])
    frames = outgoing.outgoing([m for m in batch if m.pk in moved])
    if skips:
        sent_seqs = [m.seq for m in batch if m.pk in moved]
        frames = _with_skips(frames, sent_seqs, skips, bridge.party_group(kind, recipient_id))
    # A short chunk was the last one: nothing is left to look at.
    return frames, (batch[-1].seq if through is not None else None)


def _with_skips(frames: list[Outgoing], seqs: list[int], skips: list[int], group: str) -> list[Outgoing]:
    """Merge `skip` frames for the canceled `skips` into `frames` (of `seqs`), in seq order."""
    items = [(seq, frame) for seq, frame in zip(seqs, frames, strict=True)]
    items += [(seq, Outgoing(None, group, schedule.skip_frame_text(seq))) for seq in skips]
    return [frame for _, frame in sorted(items, key=lambda item: item[0])]


def _record_attempts(
    message_ids: Iterable[uuid.UUID], outcome: str, *, now: datetime, error: str = ""
) -> None:
    copy_insert(
        [
            DeliveryAttempt(message_id=pk, at=now, channel=Channel.WEBSOCKET, outcome=outcome, error=error)
            for pk in message_ids
        ]
    )


def _close_open_attempts(message_ids: Iterable[uuid.UUID], outcome: str, error: str = "") -> None:
    DeliveryAttempt.objects.filter(
        message_id__in=list(message_ids), channel=Channel.WEBSOCKET, outcome=Outcome.SENT
    ).update(outcome=outcome, error=error)


# --- Receipts from the device ---------------------------------------------------------------


def messages_acknowledge(
    *, recipient_id: int, message_ids: Iterable[object], kind: str = PartyKind.MOBILE
) -> list[uuid.UUID]:
    """Mark the recipient's messages delivered; ids that are not its own are ignored."""
    return receipts_apply([Receipt(kind, recipient_id, Status.DELIVERED, list(message_ids))])


def messages_mark_read(
    *, recipient_id: int, message_ids: Iterable[object], kind: str = PartyKind.MOBILE
) -> list[uuid.UUID]:
    """Mark the recipient's messages read (and delivered, if the ack was lost)."""
    return receipts_apply([Receipt(kind, recipient_id, Status.READ, list(message_ids))])


@dataclass(frozen=True)
class Receipt:
    """An `ack` (target delivered) or `read` (target read) of a recipient, for its message ids."""

    kind: str
    recipient_id: int
    target: str
    message_ids: list[object]


def receipts_apply(receipts: list[Receipt]) -> list[uuid.UUID]:
    """Apply many recipients' receipts in one transaction; return the ids that moved.

    Ids that are not the recipient's own are ignored. The sockets of a process hand their
    receipts in together (realtime.receipts), so a busy process pays one transaction for
    hundreds of acks instead of one each. Acks go before reads: the outcome is the same as
    applying the receipts one by one, in any order, since `read` is never left.
    """
    claimed: dict[str, dict[uuid.UUID, tuple[str, int]]] = defaultdict(dict)
    for receipt in receipts:
        for pk in (parse_uuid(v) for v in receipt.message_ids):
            if pk is not None:
                claimed[receipt.target][pk] = (receipt.kind, receipt.recipient_id)
    if not claimed:
        return []
    moved_ids: list[uuid.UUID] = []
    with transaction.atomic():
        for target in (Status.DELIVERED, Status.READ):
            by_claimer: dict[tuple[str, int], list[uuid.UUID]] = defaultdict(list)
            for pk, claimer in claimed.get(target, {}).items():
                by_claimer[claimer].append(pk)
            if not by_claimer:
                continue
            # Ownership is part of the compare-and-set: another recipient's ids match nothing.
            own = Q()
            for (kind, recipient_id), ids in by_claimer.items():
                own |= inbox(recipient_id, kind) & Q(pk__in=ids)
            moved = lifecycle.transition(Message.objects.filter(own), to=target)
            moved_ids += [m.id for m in moved]
        if moved_ids:
            _close_open_attempts(moved_ids, Outcome.ACKED)
        if moved_ids and _strict():
            owners = {
                claimer for by_id in claimed.values() for pk, claimer in by_id.items() if pk in set(moved_ids)
            }
            for kind, recipient_id in owners:
                transaction.on_commit(lambda k=kind, r=recipient_id: _enqueue_backlog(r, k))
    return moved_ids


def _enqueue_backlog(recipient_id: int, kind: str = PartyKind.MOBILE) -> None:
    from .tasks import deliver_backlog

    try:
        deliver_backlog.delay(recipient_id, kind)
    except Exception as exc:  # noqa: BLE001 - the pending sweep will get to it
        logger.warning(
            "message.backlog_dispatch_failed", extra={"recipient_id": recipient_id, "error": repr(exc)}
        )


def messages_release_unacked(
    *, recipient_ids: Iterable[int], reason: str, kind: str = PartyKind.MOBILE
) -> list[uuid.UUID]:
    """Move recipients' `sent` messages back to `pending` (their connections are gone).

    The recipients are offline now, so each mobile one with a released message gets a wake-up push.
    """
    field = "recipient_business_id__in" if kind == PartyKind.BUSINESS else "recipient_id__in"
    with transaction.atomic():
        moved = lifecycle.transition(
            Message.objects.filter(**{field: list(recipient_ids)}, status=Status.SENT),
            to=Status.PENDING,
            reason=reason,
            next_attempt_at=None,
        )
        ids = [m.id for m in moved]
        if ids:
            _close_open_attempts(ids, Outcome.OFFLINE, error=reason)
        if ids and kind == PartyKind.MOBILE:
            released_to = set(Message.objects.filter(pk__in=ids).values_list("recipient_id", flat=True))
            for recipient_id in released_to:
                transaction.on_commit(lambda rid=recipient_id: push_schedule(recipient_id=rid))
    return ids


# --- Failure, dead letters, requeue ---------------------------------------------------------


def messages_fail(
    messages: QuerySet[Message], *, reason: str, attempt_outcome: str = Outcome.ERROR, **changes
) -> list[uuid.UUID]:
    """Fail the messages that may still fail and give each a dead-letter row.

    Attempts still waiting for an ack are closed with `attempt_outcome`.
    """
    with transaction.atomic():
        moved = lifecycle.transition(messages, to=Status.FAILED, reason=reason, **changes)
        ids = [m.id for m in moved]
        if not ids:
            return []
        _close_open_attempts(ids, attempt_outcome, error=reason)
        failed = Message.objects.filter(pk__in=ids).select_related("recipient", "recipient_business")
        DeadLetter.objects.bulk_create(
            [DeadLetter(message=m, reason=reason[:500], payload=_snapshot(m)) for m in failed],
            ignore_conflicts=True,
        )
    for pk in ids:
        logger.warning("message.dead_lettered", extra={"message_id": str(pk), "reason": reason})
    return ids


def _snapshot(message: Message) -> dict:
    return {
        "id": str(message.pk),
        "kind": message.kind,
        "conversation_id": str(message.conversation_id) if message.conversation_id else None,
        "recipient_phone_number": message.recipient.phone_number if message.recipient else None,
        "recipient_business": message.recipient_business.username if message.recipient_business else None,
        "seq": message.seq,
        "subject": message.subject,
        "content": message.content,
        "content_type": message.content_type,
        "priority": message.priority,
        "ttl_seconds": message.ttl_seconds,
        "retry_count": message.retry_count,
        "created_at": message.created_at.isoformat(),
        "correlation_id": message.correlation_id,
    }


def dead_letters_requeue(*, dead_letters: QuerySet[DeadLetter]) -> list[uuid.UUID]:
    """Requeue the dead letters' messages: retries reset, status `queued`, the relay woken on commit."""
    now = timezone.now()
    with transaction.atomic():
        message_ids = list(dead_letters.values_list("message_id", flat=True))
        requeued: list[uuid.UUID] = []
        # Group by TTL so an expired message gets a fresh expiry from now.
        by_ttl: dict[int | None, list[uuid.UUID]] = defaultdict(list)
        for pk, ttl in Message.objects.filter(pk__in=message_ids).values_list("pk", "ttl_seconds"):
            by_ttl[ttl].append(pk)
        for ttl, ids in by_ttl.items():
            moved = lifecycle.transition(
                Message.objects.filter(pk__in=ids),
                to=Status.QUEUED,
                now=now,
                reason="requeued",
                next_attempt_at=now,  # due for the relay at once
                expires_at=now + timedelta(seconds=ttl) if ttl else None,
            )
            requeued += [m.id for m in moved]
        DeadLetter.objects.filter(message_id__in=requeued).delete()
        if requeued:
            relay_notify()
    return requeued


def dead_letter_delete(*, dead_letter: DeadLetter) -> None:
    """Remove a dead letter; its message stays `failed` with its history."""
    dead_letter.delete()


# --- Sweeps (Celery beat) -------------------------------------------------------------------


def sweep_ack_timeouts(*, limit: int | None = None) -> int:
    """Count `sent` messages whose ack deadline passed as failed attempts; retry or fail them."""
    now = timezone.now()
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
            )
            moved_ids = [m.id for m in moved]
            _close_open_attempts(moved_ids, Outcome.TIMEOUT, error=f"no ack within {timeout:g} s")
            rows = list(Message.objects.filter(pk__in=moved_ids).values_list("pk", "priority"))
            transaction.on_commit(lambda rows=rows, delay=delay: messages_dispatch(rows, countdown=delay))
        handled += len(moved_ids)
    return handled


def sweep_pending(*, limit: int | None = None) -> int:
    """Dispatch a backlog delivery for each online recipient with `pending` messages due."""
    from .tasks import deliver_backlog

    recipients = pending_recipients_due_online(limit=limit or settings.MESSAGING_SWEEP_BATCH)
    for kind, recipient_id in recipients:
        deliver_backlog.delay(recipient_id, kind)
    return len(recipients)


def pending_recipients_due_online(*, limit: int) -> list[tuple[str, int]]:
    """Return the recipients, as (kind, id), with due `pending` messages that are online now."""
    candidates = pending_recipients_due(limit=limit)
    online = {
        (kind, uid)
        for kind in PartyKind.values
        for uid in presence.online_user_ids((i for k, i in candidates if k == kind), kind=kind)
    }
    return [pair for pair in candidates if pair in online]


def sweep_expired(*, limit: int | None = None) -> int:
    """Fail undelivered messages whose TTL has passed (reason `expired`)."""
    now = timezone.now()
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
    released: list[uuid.UUID] = []
    for kind in PartyKind.values:
        ids = [uid for k, uid in offline if k == kind]
        if ids:
            released += messages_release_unacked(recipient_ids=ids, reason="connection went stale", kind=kind)
    if offline or dropped:
        logger.info(
            "presence.stale_sweep",
            extra={"offline_users": len(offline), "dropped_records": dropped, "released": len(released)},
        )
    return len(released)


def idempotency_keys_purge() -> int:
    """Delete Idempotency-Keys older than IDEMPOTENCY_KEY_TTL_HOURS (at least 24 h)."""
    hours = max(24, settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(
        created_at__lt=timezone.now() - timedelta(hours=hours)
    ).delete()
    return deleted
