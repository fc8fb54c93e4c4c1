"""Delivery in chunks: the relay's unit of work, one presence lookup and one update per outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction

from apps.accounts import presence
from apps.accounts.party import Party
from apps.common import clock
from apps.common.ids import in_ids
from apps.devices.services import push_schedule

from .. import lifecycle, outgoing
from ..models import Message, Outcome, Status
from .attempts import attempts_record
from .deliver import frames_encode, message_deliver, messages_write
from .failures import messages_fail
from .policy import DUE_TOLERANCE, strict_ordering


@dataclass
class ChunkReport:
    sent: int = 0
    offline: int = 0
    failed: int = 0
    skipped: int = 0
    not_due: int = 0
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
    if strict_ordering():
        # Strict ordering holds per message; keep its one-by-one logic.
        for pk in message_ids:
            outcome = message_deliver(message_id=pk)
            report.sent += outcome == "sent"
            report.offline += outcome == "offline"
        return report
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
        report.failed += len(messages_fail(Message.objects.filter(pk__in=expired), reason="expired"))
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
    party_of = {m.pk: m.party for m in live}  # one Party per message, built once
    online = presence.online_parties(set(party_of.values()))
    offline = [m for m in live if party_of[m.pk] not in online]
    if offline:
        report.offline_recipients = _hold_offline(offline, party_of, now=now)
        report.offline = len(offline)
    report.sent = messages_write(frames_encode([m for m in live if party_of[m.pk] in online]))
    return report


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
