"""Scheduled send and cancel (SPEC.md section 8): the sender's say over when, and whether.

A message sent with `send_at` is stored `scheduled`, without a seq, due (`next_attempt_at`) at
`send_at`. The relay (relay.py) promotes due ones in bulk: it claims them (FOR UPDATE SKIP
LOCKED, so two relays never promote the same row), gives each its recipient's next seq and
moves it to `queued` through the lifecycle, in one transaction, then dispatches them like any
other. Re-running a promotion finds nothing left to do.

Cancel moves a `scheduled`, `queued` or `pending` message to `canceled` through the same
compare-and-set as every other status change, so it races safely with a worker delivering it:
whichever commits first wins, and a message written to a socket can no longer be canceled. A
canceled message that held a seq leaves it taken; its recipient hears `{"type": "skip", "seq"}`
in its place (at once when connected, else at its next catch-up), so no gap looks like loss.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import Counter
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Max

from apps.accounts.models import User
from apps.accounts.party import Party
from apps.common import bridge, clock

from .. import lifecycle
from ..errors import MessageNotCancelable, MessageNotFound
from ..models import Message, Status
from ..relay import relay_notify
from ..selectors import inbox
from .seqs import seqs_take

logger = logging.getLogger(__name__)

PROMOTE_BATCH = 1000
# Skip frames one catch-up chunk carries at most (a later chunk carries the rest).
SKIPS_MAX = 1000


# --- Scheduled send -------------------------------------------------------------------------


def scheduled_promote_due(*, now: datetime | None = None, limit: int = PROMOTE_BATCH) -> int:
    """Make due scheduled messages `queued` with their seqs; return how many were promoted."""
    now = now or clock.now()
    promoted = 0
    while True:
        with transaction.atomic():
            due = list(
                Message.objects.filter(status=Status.SCHEDULED, next_attempt_at__lte=now)
                .order_by("next_attempt_at", "pk")
                .select_for_update(skip_locked=connection.features.has_select_for_update_skip_locked)
                .values_list("pk", "recipient_id")[:limit]
            )
            if due:
                _promote(due, now=now)
        promoted += len(due)
        if len(due) < limit:
            return promoted


def _promote(due: list[tuple[uuid.UUID, int]], *, now: datetime) -> None:
    # Seqs in the order the messages became due: a recipient sees them as they were scheduled.
    next_seq = seqs_take(Counter(recipient_id for _, recipient_id in due))
    assigned: list[tuple[uuid.UUID, int]] = []
    for pk, recipient_id in due:
        assigned.append((pk, next_seq[recipient_id]))
        next_seq[recipient_id] += 1
    _set_seqs(assigned)
    moved = lifecycle.transition(
        Message.objects.filter(pk__in=[pk for pk, _ in due]), to=Status.QUEUED, now=now, next_attempt_at=now
    )
    if len(moved) != len(due):  # impossible while the rows are locked; the CAS would tell
        raise RuntimeError(f"promoted {len(moved)} of {len(due)} locked scheduled messages")
    relay_notify()
    logger.info("message.scheduled_promoted", extra={"count": len(due)})


def _set_seqs(assigned: list[tuple[uuid.UUID, int]]) -> None:
    table = Message._meta.db_table
    if connection.vendor != "postgresql":
        for pk, seq in assigned:
            Message.objects.filter(pk=pk).update(seq=seq)
        return
    values = ", ".join(["(%s::uuid, %s::bigint)"] * len(assigned))
    params = [value for pair in assigned for value in pair]
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" AS m SET seq = v.seq FROM (VALUES {values}) AS v(id, seq) WHERE m.id = v.id',
            params,
        )


def scheduled_next_due_at() -> datetime | None:
    """Return when the next scheduled message becomes due (None when none is scheduled)."""
    return (
        Message.objects.filter(status=Status.SCHEDULED)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )


# --- Cancel ---------------------------------------------------------------------------------


def message_cancel(*, sender: User, message_id: uuid.UUID) -> Message:
    """Cancel one of `sender`'s messages; return it. MessageNotCancelable (409) once received."""
    with transaction.atomic():
        mine = Message.objects.filter(pk=message_id, sender=sender)
        moved = lifecycle.transition(mine, to=Status.CANCELED, reason="canceled by the sender")
        message = mine.select_related("recipient").first()
        if message is None:
            raise MessageNotFound()
        if not moved:
            raise MessageNotCancelable(
                f"The message is {message.status}; only a scheduled, queued or pending message"
                " can be canceled."
            )
        if message.seq is not None:
            # Its seq stays taken: the recipient's sockets hear why it never comes.
            party, seq = message.recipient_party, message.seq
            transaction.on_commit(lambda: announce_skips(party, [seq]))
    logger.info("message.canceled", extra={"message_id": str(message.pk)})
    return message


def skip_frame(seq: int) -> dict:
    return {"type": "skip", "seq": seq}


def skip_frame_text(seq: int) -> str:
    return json.dumps(skip_frame(seq), separators=(",", ":"))


def announce_skips(party: Party, seqs: list[int]) -> None:
    """Tell the recipient's open sockets that `seqs` will never come (best effort, after commit)."""
    try:
        bridge.group_send(party.group, {"type": "deliver.frames", "frames": [skip_frame(s) for s in seqs]})
    except Exception as exc:  # noqa: BLE001 - the next catch-up sends them again
        logger.warning("realtime.skip_event_failed", extra={"error": repr(exc)})


def skips_for_catchup(*, recipient: Party, after_seq: int, through_seq: int | None) -> list[int]:
    """Return the canceled seqs in (after_seq, through_seq] a reconnecting client may still miss.

    Those above the recipient's newest delivered message: below it, the client has seen a later
    message already, so it was told at the time (live) or by an earlier catch-up. The first query
    uses a partial index of canceled messages and is empty in the common case.
    """
    canceled = Message.objects.filter(inbox(recipient), status=Status.CANCELED, seq__gt=after_seq)
    if through_seq is not None:
        canceled = canceled.filter(seq__lte=through_seq)
    seqs = list(canceled.order_by("seq").values_list("seq", flat=True)[:SKIPS_MAX])
    if not seqs:
        return []
    seen = (
        Message.objects.filter(inbox(recipient), status__in=(Status.DELIVERED, Status.READ)).aggregate(
            top=Max("seq")
        )["top"]
        or 0
    )
    return [seq for seq in seqs if seq > seen]
