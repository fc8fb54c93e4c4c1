"""Sending one message: the one-way send, a chat message's store, the idempotent send.

A message is persisted with its recipient's next `seq` in the statement that inserts it (or,
scheduled, without one until due); the relay dispatches it from what is committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterable
from contextlib import nullcontext
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F, Prefetch, prefetch_related_objects
from django.utils import timezone

from apps.accounts.models import MobileUser, PartyKind, User
from apps.common import metrics
from apps.common.logging import get_correlation_id
from apps.media.models import Media
from apps.media.services import media_attach

from .. import hooks
from ..errors import RecipientNotFound
from ..models import (
    Kind,
    Message,
    Priority,
    Status,
)
from ..relay import relay_notify
from .idempotency import idempotent

logger = logging.getLogger(__name__)


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
    """Send once per (sender, key); return the message and whether this call created it."""
    return idempotent(
        sender=sender,
        key=idempotency_key,
        body_hash=body_hash,
        store=lambda: message_send(sender=sender, **send_kwargs),
        remember=lambda message: {"message": message},
        replay=lambda record: record.message,
    )
