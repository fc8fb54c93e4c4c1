"""Senders (Django users with a tier), mobile users (keyed by phone number) and API tokens."""

from __future__ import annotations

import hashlib

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.db.models import Q


class Tier(models.TextChoices):
    BASIC = "basic"
    PREMIUM = "premium"
    ENTERPRISE = "enterprise"


class PartyKind(models.TextChoices):
    """The two kinds of people a message goes between (sender types in frames, socket kinds)."""

    BUSINESS = "business"
    MOBILE = "mobile"


class User(AbstractUser):
    """A business user: sends messages and chats with mobile users."""

    tier = models.CharField(max_length=16, choices=Tier.choices, default=Tier.BASIC)
    display_name = models.CharField(max_length=200, blank=True)
    # Last `seq` of the chat messages addressed to this business user (its own stream, kept
    # like MobileUser.last_seq).
    last_seq = models.BigIntegerField(default=0)
    party_kind = PartyKind.BUSINESS

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
        permissions = [
            ("send_message", "Can send one-way messages"),
            ("send_broadcast", "Can broadcast to many mobile users"),
            ("chat", "Can chat with mobile users"),
            ("manage_dead_letters", "Can review, requeue and delete dead letters"),
        ]

    @property
    def name(self) -> str:
        return self.display_name or self.get_full_name() or self.username


class MobileUser(models.Model):
    """A user of the business's mobile app, identified by an E.164 phone number."""

    phone_number = models.CharField(max_length=16, unique=True)
    name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    # Last `seq` handed out to a message addressed to this user; bumped in the transaction that
    # stores the message, so the sequence is gapless.
    last_seq = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    party_kind = PartyKind.MOBILE

    # Duck-typed like a Django user so DRF and Channels can carry either kind of principal.
    is_authenticated = True
    is_anonymous = False
    is_staff = False

    class Meta:
        ordering = ["phone_number"]

    def __str__(self) -> str:
        return self.phone_number

    def has_perm(self, perm: str) -> bool:
        return False

    @property
    def display(self) -> str:
        return self.name or self.phone_number


class ApiToken(models.Model):
    """A long-lived API token of a sender or a mobile user. Only its SHA-256 is stored."""

    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8, help_text="First characters, to recognise a token.")
    user = models.ForeignKey(User, null=True, blank=True, on_delete=models.CASCADE)
    mobile_user = models.ForeignKey(MobileUser, null=True, blank=True, on_delete=models.CASCADE)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(user__isnull=False) & Q(mobile_user__isnull=True))
                | (Q(user__isnull=True) & Q(mobile_user__isnull=False)),
                name="api_token_has_exactly_one_owner",
            )
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user or self.mobile_user})"

    @staticmethod
    def digest_of(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    @property
    def principal(self) -> User | MobileUser:
        return self.user if self.user_id else self.mobile_user
