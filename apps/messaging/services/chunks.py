"""Delivery in chunks: the one delivery path, one presence lookup and one update per outcome.

Every delivery goes through `messages_deliver_chunk`: the relay's chunks of single sends,
batches, broadcasts and requeues, and (as a chunk of one) `message_deliver`. Strict ordering is
a rule of the chunk too: a recipient's message goes only when it is the lowest undelivered one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from django.db import transaction

from apps.accounts import presence
from apps.accounts.party import Party
from apps.common import clock
from apps.common.ids import in_ids
from apps.devices.services import push_schedule

from .. import lifecycle, outgoing
from ..models import Message, Outcome, Status
from ..selectors import first_undelivered_seqs
from .attempts import attempts_record
from .deliver import frames_encode, messages_write
from .failures import messages_fail
from .policy import DUE_TOLERANCE, strict_ordering


@dataclass
class ChunkReport:
    sent: int = 0
    offline: int = 0
    failed: int = 0  # dead-lettered: expired, recipient deactivated, frame unencodable
    expired: int = 0  # of `failed`
    skipped: int = 0  # not queued or pending (any more)
    not_due: int = 0
    held: int = 0  # strict ordering: behind an earlier undelivered message of its recipient
    # Recipients whose messages were held because they are offline.
    offline_recipients: list[Party] = field(default_factory=list)


def messages_deliver_chunk(*, message_ids: list[str]) -> ChunkReport:
    """Deliver a chunk of messages: one presence lookup, one status update per outcome.

    Online recipients (mobile or business) get their messages as one frame event each; offline
    ones' messages go `pending` (and mobile users get a push after commit). If the channel
    layer fails (or its breaker is open) the affected messages return to `pending` and the
    error propagates, so the task retries; the pending sweep also picks them up.
    """
    report = ChunkReport()
    messages = outgoing.rows(
        Message.objects.filter(
            in_ids(Message, message_ids), status__in=(Status.QUEUED, Status.PENDING)
        ).order_by("recipient_business_id", "recipient_id", "seq")
    )
    report.skipped = len(message_ids) - len(messages)
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
    report.sent = messages_write(frames)
    return report


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
    with transaction.atomic():
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
