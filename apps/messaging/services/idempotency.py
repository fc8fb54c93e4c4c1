"""Idempotency-Key: one claim and one wrapper for every send that takes a key.

The key is claimed in its own committed row before anything is stored, so a concurrent request
with the same key sees the claim and gets 409 instead of a second message; a replay with the
same body gets the original answer, another body 422.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.accounts.models import User

from ..errors import IdempotencyKeyInFlight, IdempotencyKeyMismatch
from ..models import (
    IdempotencyKey,
)

# A claimed Idempotency-Key whose request never finished may be taken over after this long.
IDEMPOTENCY_LEASE = timedelta(seconds=60)

T = TypeVar("T")


def idempotent(
    *,
    sender: User,
    key: str,
    body_hash: str,
    store: Callable[[], T],
    remember: Callable[[T], dict],
    replay: Callable[[IdempotencyKey], T],
) -> tuple[T, bool]:
    """Run `store` once per (sender, key); return its result and whether this call ran it.

    A replay with the same body gets `replay(record)` of the first call's record; `remember`
    names what the record keeps of a result (the fields of IdempotencyKey to set), written in
    the transaction of `store`, so a key points at what was stored or at nothing.
    """
    record = _claim(sender=sender, key=key, body_hash=body_hash)
    if record.message_id is not None:
        return replay(record), False
    try:
        with transaction.atomic():
            result = store()
            IdempotencyKey.objects.filter(pk=record.pk).update(**remember(result))
    except Exception:
        # Nothing was stored: free the key so that a corrected retry can use it.
        IdempotencyKey.objects.filter(pk=record.pk, message__isnull=True).delete()
        raise
    return result, True


def _claim(*, sender: User, key: str, body_hash: str) -> IdempotencyKey:
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(sender=sender, key=key, request_hash=body_hash)
    except IntegrityError:
        pass
    record = IdempotencyKey.objects.select_related("message", "message__recipient").get(
        sender=sender, key=key
    )
    if record.request_hash != body_hash:
        raise IdempotencyKeyMismatch()
    if record.message_id is not None:
        return record
    now = timezone.now()
    if record.created_at > now - IDEMPOTENCY_LEASE:
        raise IdempotencyKeyInFlight()
    # The first request died before storing anything: take the claim over.
    taken = IdempotencyKey.objects.filter(
        pk=record.pk, message__isnull=True, created_at=record.created_at
    ).update(created_at=now)
    if not taken:
        raise IdempotencyKeyInFlight()
    return record


def idempotency_keys_purge() -> int:
    """Delete Idempotency-Keys older than IDEMPOTENCY_KEY_TTL_HOURS (at least 24 h)."""
    hours = max(24, settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(
        created_at__lt=timezone.now() - timedelta(hours=hours)
    ).delete()
    return deleted
