"""Writes for accounts: creating senders, mobile users, tokens and WebSocket tickets."""

from __future__ import annotations

import logging
import math
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import transaction
from django.utils import timezone

from apps.common.phone import normalize_phone
from apps.common.redis import redis_client

from .models import ApiToken, MobileUser, Tier, User

logger = logging.getLogger(__name__)

SENDER_DEFAULT_PERMISSIONS = ("send_message", "chat")
TICKET_PREFIX = "realtime:ticket:"
# A revoked token's digest, kept while another process may still have its owner cached.
REVOKED_PREFIX = "auth:revoked:"


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


def tokens_revoke(*, owner: User | MobileUser) -> int:
    """Delete every token of `owner`, effective at once in every process; return how many.

    Each process caches principals (AUTH_TOKEN_CACHE_SECONDS): this one forgets them now, and a
    marker per digest in Redis makes the others look the token up again (selectors).
    """
    from .selectors import principal_cache_forget  # selectors imports this module

    tokens = ApiToken.objects.filter(**{"user" if isinstance(owner, User) else "mobile_user": owner})
    digests = list(tokens.values_list("digest", flat=True))
    if not digests:
        return 0
    tokens.delete()
    ttl = max(1, math.ceil(settings.AUTH_TOKEN_CACHE_SECONDS) + 5)
    try:
        with redis_client().pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.set(REVOKED_PREFIX + digest, 1, ex=ttl)
            pipe.execute()
    except Exception as exc:  # noqa: BLE001 - the rows are gone; caches expire within the TTL
        logger.warning("accounts.revocation_marker_failed", extra={"error": repr(exc)})
    principal_cache_forget(digests=digests)
    # Again after commit: a request of this process may have cached it since.
    transaction.on_commit(lambda: principal_cache_forget(digests=digests))
    return len(digests)
