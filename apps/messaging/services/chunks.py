"""Delivery in chunks: the one delivery path, one presence lookup and one update per outcome.

A chunk is read, decided and marked in one transaction that holds its rows (`FOR UPDATE SKIP
LOCKED`, so two deliveries never hold the same message), and its frames leave after that
commit. Every delivery is such a chunk:

- `messages_deliver_due`: the outbox's own path. A worker claims the oldest due `queued`
  messages of a lane itself, as many as a chunk holds, when the relay (relay.py) says that the
  lane has some: single sends, batches, broadcasts, promoted scheduled messages and requeued
  dead letters all leave this way, with no message ids in the task and nothing written to a
  message before the delivery itself;
- `messages_deliver_chunk`: the messages of given ids (retries of `pending` ones), and
  `message_deliver`, a chunk of one.

Strict ordering is a rule of the chunk too: a recipient's message goes only when it is the
lowest undelivered one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction

from apps.accounts import presence
from apps.accounts.party import Party
from apps.common import clock
from apps.common.ids import in_ids
from apps.devices.services import push_schedule

from .. import lifecycle, outgoing
from ..dispatch import lanes_dispatch
from ..models import Message, Outcome, Status
from ..outgoing import Outgoing
from ..selectors import first_undelivered_seqs
from .attempts import attempts_record
from .deliver import frames_encode, frames_send, messages_mark_sent
from .failures import messages_fail
from .policy import DUE_TOLERANCE, strict_ordering


@dataclass
class ChunkReport:
    sent: int = 0
    offline: int = 0
    failed: int = 0  # dead-lettered: expired, recipient deactivated, frame unencodable
    expired: int = 0  # of `failed`
    claimed: int = 0  # read and held by this chunk
    skipped: int = 0  # asked for by id, but not queued or pending (any more), or held elsewhere
    not_due: int = 0
    held: int = 0  # strict ordering: behind an earlier undelivered message of its recipient
    # Recipients whose messages were held because they are offline.
    offline_recipients: list[Party] = field(default_factory=list)


def messages_deliver_due(*, priority: str, limit: int | None = None) -> ChunkReport:
    """Claim the oldest due `queued` messages of a lane (up to a chunk) and deliver them.

    The claim skips rows that another delivery holds, so any number of workers can drain a
    lane at once. A full chunk asks for one more task on the lane before it is delivered, so
    that another worker takes the next chunk meanwhile; the last, short one ends the chain.
    """
    limit = limit or settings.MESSAGING_DELIVERY_CHUNK
    due = Message.objects.filter(
        status=Status.QUEUED, priority=priority, next_attempt_at__lte=clock.now()
    ).order_by("next_attempt_at", "seq")[:limit]  # a recipient's lower seqs first when times tie

    def claim() -> list[outgoing.Row]:
        rows = outgoing.rows(due.select_for_update(skip_locked=True, of=("self",)))
        if len(rows) == limit:
            lanes_dispatch([priority])
        # A recipient's messages together, in seq order: they leave in one frame event.
        return sorted(rows, key=_recipient_order)

    return _deliver(claim, asked=None)


def messages_deliver_chunk(*, message_ids: list[str]) -> ChunkReport:
    """Deliver the `queued` or `pending` messages among `message_ids` (the others are skipped)."""
    chunk = Message.objects.filter(
        in_ids(Message, message_ids), status__in=(Status.QUEUED, Status.PENDING)
    ).order_by("recipient_business_id", "recipient_id", "seq")

    def read() -> list[outgoing.Row]:
        return outgoing.rows(chunk.select_for_update(skip_locked=True, of=("self",)))

    return _deliver(read, asked=len(message_ids))


def _recipient_order(row: outgoing.Row) -> tuple[int, int, int]:
    return (row.recipient_business_id or 0, row.recipient_id or 0, row.seq)


def _deliver(read: Callable[[], list[outgoing.Row]], *, asked: int | None) -> ChunkReport:
    """Deliver the rows that `read` selects and locks: one presence lookup, one update per outcome.

    Online recipients (mobile or business) get their messages as one frame event each; offline
    ones' messages go `pending` (and mobile users get a push after commit). The rows are read,
    decided and marked in one transaction; the frames leave once it has committed. If the
    channel layer fails (or its breaker is open) the affected messages return to `pending` and
    the error propagates, so the task retries; the pending sweep also picks them up.
    """
    report = ChunkReport()
    with transaction.atomic():
        messages = read()
        report.claimed = len(messages)
        if asked is not None:
            report.skipped = asked - len(messages)
        frames = _decide(messages, report)
        moved = messages_mark_sent([f.pk for f in frames])
    report.sent = frames_send([f for f in frames if f.pk in moved])
    return report


def _decide(messages: list[outgoing.Row], report: ChunkReport) -> list[Outgoing]:
    """Settle what cannot be delivered now; return the frames of the messages to write now."""
    now = clock.now()
    now_s = now.timestamp()  # rows carry their times as epoch seconds
    expired = [m.pk for m in messages if m.expires_at is not None and m.expires_at <= now_s]
    if expired:
        report.expired = len(messages_fail(Message.objects.filter(pk__in=expired), reason="expired"))
        report.failed += report.expired
    inactive = [m.pk for m in messages if m.pk not in expired and not m.recipient_is_active]
    if inactive:
        report.failed += len(
            messages_fail(Message.objects.filter(pk__in=inactive), reason="recipient deactivated")
        )
    done = set(expired) | set(inactive)
    due_at = (now + DUE_TOLERANCE).timestamp()
    live = []
    for m in messages:
        if m.pk in done:
            continue
        if m.status == Status.PENDING and m.next_attempt_at is not None and m.next_attempt_at > due_at:
            report.not_due += 1
            continue
        live.append(m)
    if strict_ordering() and live:
        live, behind = _strict_first(live)
        report.held = len(behind)
    party_of = {m.pk: m.party for m in live}  # one Party per message, built once
    online = presence.online_parties(set(party_of.values()))
    offline = [m for m in live if party_of[m.pk] not in online]
    if offline:
        report.offline_recipients = _hold_offline(offline, party_of, now=now)
        report.offline = len(offline)
    deliverable = [m for m in live if party_of[m.pk] in online]
    frames = frames_encode(deliverable)
    report.failed += len(deliverable) - len(frames)  # unencodable: dead-lettered by frames_encode
    return frames


def _strict_first(messages: list[outgoing.Row]) -> tuple[list[outgoing.Row], list[uuid.UUID]]:
    """Split `messages` into those first in their recipient's undelivered stream and the others.

    Strict ordering: a recipient's next message goes only once the one before it is acked. The
    others wait `pending`, due when that ack enqueues the recipient's backlog; those already
    `pending` stay as they are. Return the first ones and the ids of the others.
    """
    first = first_undelivered_seqs({m.party for m in messages})
    going = [m for m in messages if first.get(m.party) == m.seq]
    behind = [m for m in messages if first.get(m.party) != m.seq]
    queued = [m.pk for m in behind if m.status == Status.QUEUED]
    if queued:
        # Only from `queued`: one that went `sent` meanwhile (a catch-up) must not move back.
        still_queued = Message.objects.filter(pk__in=queued, status=Status.QUEUED)
        lifecycle.transition(still_queued, to=Status.PENDING, next_attempt_at=None)
    return going, [m.pk for m in behind]


# What message_deliver answers, from a chunk of one's report (for logs and tests).
_OUTCOMES = (
    ("sent", "sent"),
    ("offline", "offline"),
    ("expired", "expired"),
    ("failed", "failed"),
    ("not_due", "not_due"),
    ("held", "held"),
)


def message_deliver(*, message_id: str | uuid.UUID) -> str:
    """Deliver one message now, as a chunk of one; return what happened (for logs and tests)."""
    report = messages_deliver_chunk(message_ids=[str(message_id)])
    for field_name, outcome in _OUTCOMES:
        if getattr(report, field_name):
            return outcome
    return "skipped"


def _hold_offline(messages: list[outgoing.Row], party_of: dict, *, now) -> list[Party]:
    """Move queued messages of offline recipients to `pending`; push to each mobile one after commit.

    `party_of` maps each message id to its recipient. Return the recipients whose messages moved.
    """
    with transaction.atomic(savepoint=False):
        moved = lifecycle.transition(
            Message.objects.filter(pk__in=[m.pk for m in messages], status=Status.QUEUED),
            to=Status.PENDING,
            next_attempt_at=None,
        )
        moved_ids = [m.id for m in moved]
        attempts_record(moved_ids, Outcome.OFFLINE, now=now, error="recipient offline")
        recipients = sorted({party_of[pk] for pk in moved_ids})
        for recipient in recipients:
            if recipient.is_mobile:  # business users have no devices to wake
                transaction.on_commit(lambda rid=recipient.id: push_schedule(recipient_id=rid))
    return recipients
