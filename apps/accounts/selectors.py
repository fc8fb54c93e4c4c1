"""Reads for accounts: resolving tokens and tickets to principals."""

from __future__ import annotations

import time

from django.conf import settings
from django.utils import timezone

from apps.common.redis import redis_client

from .models import ApiToken, MobileUser, User
from .services import REVOKED_PREFIX, TICKET_PREFIX

# Token digest -> (monotonic expiry, principal). The principal object keeps Django's permission
# cache, so a cached sender costs no query at all for authentication and permission checks.
_principals: dict[str, tuple[float, User | MobileUser]] = {}
_CACHE_MAX_ENTRIES = 10_000


def principal_for_token(*, key: str) -> User | MobileUser | None:
    """Return the active owner of the token `key`, or None.

    A principal found is remembered in this process for AUTH_TOKEN_CACHE_SECONDS: revoking a
    token, deactivating its owner or changing permissions takes up to that long to apply.
    Except for a mobile user's tokens revoked by `services.tokens_revoke` (erasure): a cached
    mobile principal is checked against the revocation markers in Redis, so it stops at once
    in every process; senders, the hot path, pay no such round trip.
    """
    if not key or len(key) > 128:
        return None
    digest = ApiToken.digest_of(key)
    ttl = settings.AUTH_TOKEN_CACHE_SECONDS
    hit = _principals.get(digest) if ttl > 0 else None
    if hit is not None and hit[0] > time.monotonic():
        if not isinstance(hit[1], MobileUser) or not _revoked(digest):
            return hit[1]
        _principals.pop(digest, None)
    principal = _principal_for_digest(digest)
    if principal is not None and ttl > 0:
        if len(_principals) >= _CACHE_MAX_ENTRIES:
            _principals.clear()
        _principals[digest] = (time.monotonic() + ttl, principal)
    return principal


def principal_cache_clear() -> None:
    """Forget every remembered principal (tests, and after revoking tokens in this process)."""
    _principals.clear()


def principal_cache_forget(*, digests: list[str]) -> None:
    """Forget the principals of these token digests in this process."""
    for digest in digests:
        _principals.pop(digest, None)


def _revoked(digest: str) -> bool:
    """Return whether the token was revoked by another process (fail closed: look it up)."""
    try:
        return bool(redis_client().exists(REVOKED_PREFIX + digest))
    except Exception:  # noqa: BLE001 - without Redis, the database decides
        return True


def _principal_for_digest(digest: str) -> User | MobileUser | None:
    token = ApiToken.objects.select_related("user", "mobile_user").filter(digest=digest).first()
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
