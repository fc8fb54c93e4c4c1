"""Writes for conversations: start, send, read, archive, close.

A conversation's row is the lock of its state: every write here takes it (`select_for_update`)
before checking the status, so a send and a close cannot interleave, and the last message,
unread counters and re-activation move together with the message that caused them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts.models import MobileUser, PartyKind, User
from apps.accounts.party import Party
from apps.messaging.errors import RecipientNotFound
from apps.messaging.models import Kind, Message
from apps.messaging.selectors import parse_uuid
from apps.messaging.services import chat_message_store, messages_mark_read

from .errors import ConversationClosed, ConversationNotFound, OneWayNotAnswerable
from .models import OPEN, Conversation, ConversationStatus
from .selectors import conversation_for

logger = logging.getLogger(__name__)


def conversation_get_or_create(*, business: User, mobile_phone_number: str) -> tuple[Conversation, bool]:
    """Return the open conversation of `business` with this mobile user, creating it if none.

    Safe under concurrent calls: the database admits one open conversation per pair, and the
    loser of a race reads the winner's. Raise RecipientNotFound for an unknown phone number.
    """
    mobile = MobileUser.objects.filter(phone_number=mobile_phone_number, is_active=True).first()
    if mobile is None:
        raise RecipientNotFound(f"No active mobile user has the phone number {mobile_phone_number}.")
    existing = Conversation.objects.filter(business=business, mobile=mobile, status__in=OPEN).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(business=business, mobile=mobile)
    except IntegrityError:
        return Conversation.objects.get(business=business, mobile=mobile, status__in=OPEN), False
    logger.info("conversation.started", extra={"conversation_id": str(conversation.pk)})
    return conversation, True


def _locked(conversation_id: object, participant: User | MobileUser) -> Conversation:
    """Lock and return the participant's conversation; ConversationNotFound if it is not one."""
    conversation = conversation_for(principal=participant, conversation_id=conversation_id)
    if conversation is None:
        if _is_one_way_message_of(participant, conversation_id):
            raise OneWayNotAnswerable()
        raise ConversationNotFound()
    return Conversation.objects.select_for_update().get(pk=conversation.pk)


def _is_one_way_message_of(participant: User | MobileUser, message_id: object) -> bool:
    """Return whether `message_id` names a one-way message addressed to `participant`."""
    pk = parse_uuid(message_id)
    return (
        pk is not None
        and participant.party_kind == PartyKind.MOBILE
        and Message.objects.filter(pk=pk, kind=Kind.ONE_WAY, recipient_id=participant.pk).exists()
    )


def conversation_message_send(
    *,
    conversation_id: object,
    author: User | MobileUser,
    content: str,
    content_type: str = "text",
    attachment_ids: Iterable[uuid.UUID] = (),
) -> Message:
    """Send a chat message into an open conversation of `author`; re-activate it if archived.

    Raise ConversationNotFound (not a participant), OneWayNotAnswerable (the id is a one-way
    message: those are never answered) or ConversationClosed; nothing is stored then.
    """
    with transaction.atomic():
        conversation = _locked(conversation_id, author)
        if conversation.status == ConversationStatus.CLOSED:
            raise ConversationClosed()
        to_mobile = conversation.side_of(author) == PartyKind.BUSINESS
        recipient = conversation.mobile if to_mobile else conversation.business
        message = chat_message_store(
            conversation_id=conversation.pk,
            author=author,
            recipient=recipient,
            content=content,
            content_type=content_type,
            attachment_ids=attachment_ids,
        )
        unread = "unread_mobile" if to_mobile else "unread_business"
        Conversation.objects.filter(pk=conversation.pk).update(
            status=ConversationStatus.ACTIVE,
            last_message=message,
            last_message_at=message.created_at,
            updated_at=timezone.now(),
            **{unread: F(unread) + 1},
        )
    return message


def conversation_mark_read(*, conversation_id: object, reader: User | MobileUser) -> int:
    """Mark every message addressed to `reader` in its conversation read; return how many moved."""
    conversation = conversation_for(principal=reader, conversation_id=conversation_id)
    if conversation is None:
        raise ConversationNotFound()
    side = conversation.side_of(reader)
    inbox = {"recipient_id": reader.pk} if side == PartyKind.MOBILE else {"recipient_business_id": reader.pk}
    unread = Message.objects.filter(conversation=conversation, **inbox).exclude(status="read")
    ids = list(unread.values_list("pk", flat=True))
    if not ids:
        return 0
    return len(messages_mark_read(recipient=Party(side, reader.pk), message_ids=ids))


def conversation_archive(*, conversation_id: object, participant: User | MobileUser) -> Conversation:
    """Archive an active conversation (idempotent); a closed one refuses with 409."""
    return _set_status(conversation_id, participant, ConversationStatus.ARCHIVED)


def conversation_close(*, conversation_id: object, participant: User | MobileUser) -> Conversation:
    """Close the conversation for good (idempotent): it becomes read-only and frees the pair."""
    return _set_status(conversation_id, participant, ConversationStatus.CLOSED)


def _set_status(conversation_id: object, participant: User | MobileUser, status: str) -> Conversation:
    with transaction.atomic():
        conversation = _locked(conversation_id, participant)
        if conversation.status == status:
            return conversation
        if conversation.status == ConversationStatus.CLOSED:
            raise ConversationClosed()
        conversation.status = status
        conversation.closed_at = timezone.now() if status == ConversationStatus.CLOSED else None
        conversation.save(update_fields=["status", "closed_at", "updated_at"])
    logger.info("conversation.status", extra={"conversation_id": str(conversation.pk), "to": status})
    return conversation
