"""Delivering: a message, a recipient's backlog, a reconnecting socket's catch-up.

Each marks the messages `sent` (with an ack deadline and an attempt) before their frames are
written, so the device's ack, however fast, finds them `sent`.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict

from django.conf import settings
from django.db import transaction

from apps.accounts import presence
from apps.accounts.party import Party
from apps.common import bridge, clock
from apps.common.logging import get_correlation_id

from .. import lifecycle, outgoing
from ..models import (
    Message,
    Outcome,
    Status,
)
from ..outgoing import Outgoing
from ..selectors import undelivered_for_recipient
from . import schedule
from .attempts import attempts_record
from .failures import messages_fail
from .policy import ack_deadline, strict_ordering

logger = logging.getLogger(__name__)


def recipient_deliver_backlog(*, recipient: Party) -> int:
    """Write the recipient's due `pending` messages to its connections, in seq order.

    In strict mode only the first undelivered message goes, and only when nothing is in flight.
    Return how many were written.
    """
    if not presence.is_online(recipient):
        return 0
    now = clock.now().timestamp()  # rows carry their times as epoch seconds
    undelivered = undelivered_for_recipient(recipient=recipient)
    if strict_ordering():
        first = next(iter(outgoing.rows(undelivered[:1])), None)
        if first is None or first.status == Status.SENT:
            return 0
        if (
            first.status == Status.PENDING
            and first.next_attempt_at is not None
            and first.next_attempt_at > now
        ):
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
        messages_write(frames_encode(batch))
    return len(batch)


def messages_write(messages: list[Outgoing]) -> int:
    """Mark `messages` sent in one update, then send one event per recipient; return how many.

    The bookkeeping comes first (and commits) so that the device's ack, however fast, always
    finds the message `sent` with its attempt recorded.
    """
    if not messages:
        return 0
    moved = messages_mark_sent([m.pk for m in messages])
    return frames_send([m for m in messages if m.pk in moved])


def frames_send(messages: list[Outgoing]) -> int:
    """Send the frames of messages marked `sent`, one channel-layer event per recipient.

    Call it once the marking has committed. If the channel layer is unreachable, the messages
    not yet written go back to `pending` and the error propagates, so the caller's task retries.
    Return how many were sent.
    """
    if not messages:
        return 0
    by_group: dict[str, list[Outgoing]] = defaultdict(list)
    for m in messages:
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
            lifecycle.transition(
                Message.objects.filter(pk__in=unsent, status=Status.SENT),
                to=Status.PENDING,
                reason="channel layer unavailable",
                next_attempt_at=None,
                close_attempts=lifecycle.CloseAttempts(Outcome.ERROR, f"channel layer: {error!r}"),
            )
        raise error
    return len(messages)


def frames_encode(delivery_rows: list[outgoing.Row]) -> list[Outgoing]:
    """Encode the rows' frames; dead-letter at once each message whose frame cannot be built.

    Such an error comes from the message's stored data (outgoing.encode), so a retry would
    fail the same way: it is permanent, and the recipient's other messages go on without it.
    """
    frames, poisoned = outgoing.encode(delivery_rows)
    for pk, exc in poisoned.items():
        logger.error("message.frame_encoding_failed", extra={"message_id": str(pk), "error": repr(exc)})
        messages_fail(Message.objects.filter(pk=pk), reason=f"frame encoding failed: {exc!r}"[:500])
    return frames


def messages_mark_sent(message_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Move the messages to `sent` with a fresh ack deadline; record the attempts."""
    if not message_ids:
        return set()
    now = clock.now()
    with transaction.atomic(savepoint=False):
        moved = lifecycle.transition(
            message_ids,
            to=Status.SENT,
            now=now,
            next_attempt_at=ack_deadline(now),
        )
        ids = {m.id for m in moved}
        attempts_record(ids, Outcome.SENT, now=now)
    return ids


def catchup_chunk(*, recipient: Party, after_seq: int, limit: int) -> tuple[list[Outgoing], int | None]:
    """Claim the next chunk of the recipient's undelivered messages for a (re)connected socket.

    Return their encoded frames in seq order, with a `skip` frame for each canceled seq among
    them (schedule.skips_for_catchup), and the last seq looked at (None when done). The
    messages are marked `sent` before the caller writes them: a write that fails is caught by
    the ack timeout like any other lost frame.
    """
    if strict_ordering():
        if after_seq:
            return [], None
        limit = 1
    batch = outgoing.rows(undelivered_for_recipient(recipient=recipient, after_seq=after_seq)[:limit])
    # The last chunk (short) explains every canceled seq after it; a full one, those it spans.
    through = batch[-1].seq if len(batch) == limit else None
    skips = schedule.skips_for_catchup(recipient=recipient, after_seq=after_seq, through_seq=through)
    if not batch and not skips:
        return [], None
    moved = messages_mark_sent([m.pk for m in batch])
    frames = frames_encode([m for m in batch if m.pk in moved])
    if skips:
        sent_seqs = [m.seq for m in batch if m.pk in moved]
        frames = _with_skips(frames, sent_seqs, skips, recipient.group)
    # A short chunk was the last one: nothing is left to look at.
    return frames, (batch[-1].seq if through is not None else None)


def _with_skips(frames: list[Outgoing], seqs: list[int], skips: list[int], group: str) -> list[Outgoing]:
    """Merge `skip` frames for the canceled `skips` into `frames` (of `seqs`), in seq order."""
    items = [(seq, frame) for seq, frame in zip(seqs, frames, strict=True)]
    items += [(seq, Outgoing(None, group, schedule.skip_frame_text(seq))) for seq in skips]
    return [frame for _, frame in sorted(items, key=lambda item: item[0])]


def backlog_enqueue(recipient: Party) -> None:
    """Dispatch a backlog delivery for `recipient` (a task; failures are left to the pending sweep)."""
    from ..tasks import deliver_backlog

    try:
        deliver_backlog.delay(recipient.id, recipient.kind.value)
    except Exception as exc:  # noqa: BLE001 - the pending sweep will get to it
        logger.warning(
            "message.backlog_dispatch_failed",
            extra={"recipient_id": recipient.id, "kind": recipient.kind.value, "error": repr(exc)},
        )
