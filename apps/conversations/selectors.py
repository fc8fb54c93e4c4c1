"""Reads for conversations: each participant sees only its own."""

from __future__ import annotations

from django.db.models import F, Q, QuerySet, Sum

from apps.accounts.models import MobileUser, PartyKind, User
from apps.messaging.models import Message
from apps.messaging.selectors import parse_uuid, with_parties

from .models import Conversation

_RELATED = ("business", "mobile", "last_message", "last_message__sender", "last_message__sender_mobile")


def _participant(principal: User | MobileUser) -> Q:
    if principal.party_kind == PartyKind.BUSINESS:
        return Q(business_id=principal.pk)
    return Q(mobile_id=principal.pk)


def conversation_list_for(
    *, principal: User | MobileUser, status: str | None = None
) -> QuerySet[Conversation]:
    """Return the principal's conversations, most recent message first."""
    qs = (
        Conversation.objects.filter(_participant(principal))
        .select_related(*_RELATED)
        .order_by(F("last_message_at").desc(nulls_last=True), "-created_at", "-pk")
    )
    if status:
        qs = qs.filter(status=status)
    return qs


def conversation_for(*, principal: User | MobileUser, conversation_id: object) -> Conversation | None:
    """Return the principal's conversation with this id, or None (also for another's)."""
    pk = parse_uuid(conversation_id)
    if pk is None:
        return None
    return Conversation.objects.filter(_participant(principal), pk=pk).select_related(*_RELATED).first()


def conversation_messages(*, conversation: Conversation) -> QuerySet[Message]:
    """Return the conversation's messages, newest first."""
    return with_parties(Message.objects.filter(conversation=conversation)).order_by("-created_at", "-pk")


def unread_totals_for(*, principal: User | MobileUser) -> dict[str, int]:
    """Return how many of the principal's conversations have unread messages, and how many messages."""
    field = "unread_business" if principal.party_kind == PartyKind.BUSINESS else "unread_mobile"
    unread = Conversation.objects.filter(_participant(principal), **{f"{field}__gt": 0})
    totals = unread.aggregate(messages=Sum(field))
    return {"conversations": unread.count(), "messages": totals["messages"] or 0}


def conversation_state_for(
    *, principal: User | MobileUser, conversation_id: object
) -> tuple[str, int, int] | None:
    """Return (status, business_id, mobile_id) of the principal's conversation, or None.

    One indexed row and no joins: the typing relay asks it for every frame, so that a
    conversation closed a moment ago is refused at once.
    """
    pk = parse_uuid(conversation_id)
    if pk is None:
        return None
    return (
        Conversation.objects.filter(_participant(principal), pk=pk)
        .values_list("status", "business_id", "mobile_id")
        .first()
    )
