"""Conversations: one business user and one mobile user chatting, both sides writing."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.accounts.models import MobileUser, PartyKind


class ConversationStatus(models.TextChoices):
    ACTIVE = "active"
    ARCHIVED = "archived"
    CLOSED = "closed"


OPEN = (ConversationStatus.ACTIVE, ConversationStatus.ARCHIVED)


class Conversation(models.Model):
    """A chat between a business user and a mobile user.

    `status` and the last-message fields are written by `services`; the unread counters by
    the message status machine (`messaging.lifecycle`) when messages become `read`, so for each
    side the counter equals its messages in here that are not yet read.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    business = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="conversations"
    )
    mobile = models.ForeignKey(MobileUser, on_delete=models.PROTECT, related_name="conversations")
    status = models.CharField(
        max_length=10, choices=ConversationStatus.choices, default=ConversationStatus.ACTIVE
    )
    last_message = models.ForeignKey(
        "messaging.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_message_at = models.DateTimeField(null=True, blank=True)
    # Messages addressed to each side that are not yet `read`.
    unread_business = models.PositiveIntegerField(default=0)
    unread_mobile = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_message_at", "-created_at"]
        constraints = [
            # The database, not only the code, keeps one open conversation per pair.
            models.UniqueConstraint(
                fields=["business", "mobile"],
                condition=Q(status__in=["active", "archived"]),
                name="conversation_one_open_per_pair",
            ),
        ]
        indexes = [
            models.Index(fields=["business", "-last_message_at"], name="conversation_business_idx"),
            models.Index(fields=["mobile", "-last_message_at"], name="conversation_mobile_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.business} ↔ {self.mobile} ({self.status})"

    def side_of(self, principal) -> str | None:
        """Return which side (PartyKind) `principal` is on, or None if it is not a participant."""
        if principal.party_kind == PartyKind.BUSINESS and principal.pk == self.business_id:
            return PartyKind.BUSINESS
        if principal.party_kind == PartyKind.MOBILE and principal.pk == self.mobile_id:
            return PartyKind.MOBILE
        return None

    def unread_for(self, side: str) -> int:
        return self.unread_business if side == PartyKind.BUSINESS else self.unread_mobile
