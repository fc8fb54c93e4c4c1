"""Receipts from the devices: acks and reads, many recipients' in one transaction."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction

from apps.accounts.party import Party

from .. import lifecycle
from ..models import (
    Message,
    Outcome,
    Status,
)
from ..selectors import addressed_to_claimers, parse_uuid
from .deliver import backlog_enqueue
from .policy import strict_ordering


def messages_acknowledge(*, recipient: Party, message_ids: Iterable[object]) -> list[uuid.UUID]:
    """Mark the recipient's messages delivered; ids that are not its own are ignored."""
    return receipts_apply([Receipt(recipient, Status.DELIVERED, list(message_ids))])


def messages_mark_read(*, recipient: Party, message_ids: Iterable[object]) -> list[uuid.UUID]:
    """Mark the recipient's messages read (and delivered, if the ack was lost)."""
    return receipts_apply([Receipt(recipient, Status.READ, list(message_ids))])


@dataclass(frozen=True)
class Receipt:
    """An `ack` (target delivered) or `read` (target read) of a recipient, for its message ids."""

    recipient: Party
    target: str
    message_ids: list[object]


def receipts_apply(receipts: list[Receipt]) -> list[uuid.UUID]:
    """Apply many recipients' receipts in one transaction; return the ids that moved.

    Ids that are not the recipient's own are ignored. The sockets of a process hand their
    receipts in together (realtime.receipts), so a busy process pays one transaction for
    hundreds of acks instead of one each. Acks go before reads: the outcome is the same as
    applying the receipts one by one, in any order, since `read` is never left.
    """
    claimed: dict[str, dict[uuid.UUID, Party]] = defaultdict(dict)
    for receipt in receipts:
        for pk in (parse_uuid(v) for v in receipt.message_ids):
            if pk is not None:
                claimed[receipt.target][pk] = receipt.recipient
    if not claimed:
        return []
    moved_ids: list[uuid.UUID] = []
    with transaction.atomic():
        for target in (Status.DELIVERED, Status.READ):
            if not claimed.get(target):
                continue
            # Ownership is part of the compare-and-set: another recipient's ids match nothing.
            moved = lifecycle.transition(
                Message.objects.filter(addressed_to_claimers(claimed[target])),
                to=target,
                close_attempts=lifecycle.CloseAttempts(Outcome.ACKED),
            )
            moved_ids += [m.id for m in moved]
        if moved_ids and strict_ordering():
            owners = {
                claimer for by_id in claimed.values() for pk, claimer in by_id.items() if pk in set(moved_ids)
            }
            for owner in owners:
                transaction.on_commit(lambda o=owner: backlog_enqueue(o))
    return moved_ids
