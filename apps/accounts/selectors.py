"""Reads for accounts: resolving tokens and tickets to principals."""

from __future__ import annotations

from django.utils import timezone

from apps.common.redis import redis_client

from .models import ApiToken, MobileUser, User
from .services import TICKET_PREFIX


def principal_for_token(*, key: str) -> User | MobileUser | None:
    """Return the active owner of the token `key`, or None."""
    if not key or len(key) > 128:
        return None
    token = (
        ApiToken.objects.select_related("user", "mobile_user").filter(digest=ApiToken.digest_of(key)).first()
    )
    if token is None:
        return None
    principal = token.principal
    if not principal.is_active:
        return None
    now = timezone.now()
    # Touch at most once a minute: a write per request would cost more than it tells.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return principal


def principal_for_ticket(*, ticket: str) -> User | MobileUser | None:
    """Consume a WebSocket ticket (single use) and return its principal, or None."""
    if not ticket or len(ticket) > 128:
        return None
    value = redis_client().getdel(TICKET_PREFIX + ticket)
    if value is None:
        return None
    kind, _, pk = value.decode().partition(":")
    model = MobileUser if kind == "mobile" else User
    return model.objects.filter(pk=pk, is_active=True).first()
