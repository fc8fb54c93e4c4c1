"""Batch sends: up to BATCH_MAX one-way messages validated together, stored in one transaction.

Sequence numbers are taken as for a single send, in the transaction that stores the messages,
with one statement for all the recipients (seqs.seqs_take).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from datetime import timedelta
from typing import NamedTuple

from django.db import transaction

from apps.accounts.models import MobileUser, User
from apps.common import clock, metrics
from apps.common.logging import get_correlation_id
from apps.common.pgcopy import copy_rows
from apps.media.errors import MediaError
from apps.media.services import media_attach

from ..errors import MessagingError
from ..models import IdempotencyKey, Kind, Message, Priority, Status
from ..relay import relay_notify
from .idempotency import idempotent
from .seqs import seqs_take

logger = logging.getLogger(__name__)


BATCH_MAX = 1000


class BatchInvalid(MessagingError):
    """Some items of a batch cannot be stored; `errors` maps their index to field errors."""

    def __init__(self, errors: dict[int, dict[str, list[str]]]) -> None:
        self.errors = errors
        super().__init__("Some messages of the batch are invalid; nothing was stored.")


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
RECIPIENT, SEQ, CONTENT, PRIORITY = (
    BATCH_COLUMNS.index(c) for c in ("recipient_id", "seq", "content", "priority")
)


def messages_send_batch(*, sender: User, items: list[dict]) -> list[StoredMessage]:
    """Store every item of a batch with gapless seqs in one transaction, or none of them.

    `items` are validated one-way sends (OneWayMessageInputSerializer). BatchInvalid, with the
    offending indexes, if a recipient is unknown or an attachment is not the sender's; nothing
    is stored then and no seq is used. Delivery is dispatched in chunks after commit.
    """
    phones = {item["recipient_phone_number"] for item in items}
    now = clock.now()
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
        # The rows are built before the seqs are taken: taking them locks the recipients' rows
        # until commit, and other batches to the same recipients wait for that lock.
        messages: list[StoredMessage] = []
        rows = []
        for item in items:
            ttl = item.get("ttl_seconds")
            send_at = item.get("send_at")
            start = send_at or now
            rows.append(
                [
                    uuid.uuid4(),
                    Kind.ONE_WAY.value,
                    sender.pk,
                    recipient_of[item["recipient_phone_number"]],
                    None,  # SEQ: filled in below, or left null while scheduled
                    item.get("subject", ""),
                    item["content"],
                    str(item.get("content_type", "text")),
                    str(item.get("priority", Priority.NORMAL.value)),
                    (Status.SCHEDULED if send_at else Status.QUEUED).value,
                    0,
                    start,  # due for the relay at once, or for the promotion at send_at
                    now,
                    "",
                    ttl,
                    start + timedelta(seconds=ttl) if ttl else None,
                    send_at,
                    correlation_id,
                ]
            )
        # Scheduled items take their seqs when they become due (schedule.py), the others now.
        counts = Counter(
            row[RECIPIENT] for row, item in zip(rows, items, strict=True) if not item.get("send_at")
        )
        next_seq = seqs_take(counts) if counts else {}
        for row, item in zip(rows, items, strict=True):
            if not item.get("send_at"):
                row[SEQ] = next_seq[row[RECIPIENT]]
                next_seq[row[RECIPIENT]] += 1
            messages.append(StoredMessage(row[0], row[RECIPIENT], row[SEQ], row[CONTENT], row[PRIORITY]))
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

    The same claim as a single send (idempotency.idempotent): a replay with the same body gets
    the original ids, another body 422, a concurrent one 409.
    """
    return idempotent(
        sender=sender,
        key=idempotency_key,
        body_hash=body_hash,
        store=lambda: [m.pk for m in messages_send_batch(sender=sender, items=items)],
        remember=lambda ids: {"message_id": ids[0], "batch_ids": [str(pk) for pk in ids]},
        replay=_replayed_ids,
    )


def _replayed_ids(record: IdempotencyKey) -> list[uuid.UUID]:
    ids = record.batch_ids if record.batch_ids is not None else [str(record.message_id)]
    return [uuid.UUID(pk) for pk in ids]


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
