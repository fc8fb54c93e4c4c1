"""Writes for accounts: creating senders, mobile users, tokens and WebSocket tickets."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import transaction
from django.utils import timezone

from apps.common.phone import normalize_phone
from apps.common.redis import redis_client

from .models import ApiToken, MobileUser, Tier, User

SENDER_DEFAULT_PERMISSIONS = ("send_message", "chat")
TICKET_PREFIX = "realtime:ticket:"


def sender_create(*, username: str, tier: str = Tier.BASIC, permissions: tuple[str, ...] = ()) -> User:
    """Create a sender with the default permissions plus `permissions`."""
    if tier not in Tier.values:
        raise ValueError(f"tier must be one of {', '.join(Tier.values)}")
    codenames = set(SENDER_DEFAULT_PERMISSIONS) | set(permissions)
    with transaction.atomic():
        user = User.objects.create_user(username=username, tier=tier)
        perms = Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames)
        missing = codenames - {p.codename for p in perms}
        if missing:
            raise ValueError(f"unknown permission(s): {', '.join(sorted(missing))}")
        user.user_permissions.set(perms)
    return user


def mobile_user_create(*, phone_number: str, name: str = "") -> MobileUser:
    """Create a mobile user; the phone number is validated and normalised to E.164."""
    return MobileUser.objects.create(phone_number=normalize_phone(phone_number), name=name)


def token_create(*, owner: User | MobileUser) -> str:
    """Create an API token for `owner` and return its key (shown once, stored hashed)."""
    key = secrets.token_urlsafe(32)
    while key.startswith("-"):  # keys get pasted into command lines, where "-" starts an option
        key = secrets.token_urlsafe(32)
    ApiToken.objects.create(
        digest=ApiToken.digest_of(key),
        prefix=key[:8],
        user=owner if isinstance(owner, User) else None,
        mobile_user=owner if isinstance(owner, MobileUser) else None,
    )
    return key


def realtime_ticket_issue(*, principal: User | MobileUser) -> tuple[str, datetime]:
    """Issue a single-use WebSocket ticket valid REALTIME_TICKET_TTL_SECONDS, kept in Redis."""
    ticket = secrets.token_urlsafe(32)
    ttl = settings.REALTIME_TICKET_TTL_SECONDS
    kind = "mobile" if isinstance(principal, MobileUser) else "business"
    redis_client().set(TICKET_PREFIX + ticket, f"{kind}:{principal.pk}", ex=ttl)
    return ticket, timezone.now() + timedelta(seconds=ttl)
