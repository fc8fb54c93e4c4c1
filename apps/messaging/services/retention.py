"""Retention: messages that reached the end of their life are purged after MESSAGING_RETENTION_DAYS.

A message in a terminal status (read, failed, canceled) created before the cutoff goes with
its attempts, its dead letter, its idempotency key and its attachments (rows now, files after
commit). Work is done in chunks, each one transaction that claims its rows with a lock other
runs skip, so two beats share the work, a crash loses at most one uncommitted chunk and a
re-run finds nothing left to do.

The claim filters on (status, created_at); an index on created_at for terminal statuses keeps
it from scanning the table (see the README's data-protection section).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.media.models import Media
from apps.media.services import media_delete_many

from ..lifecycle import TERMINAL
from ..models import Message

logger = logging.getLogger(__name__)

# The lifecycle's terminal statuses (read, failed, canceled): nothing moves a message out of them.
TERMINAL_STATUSES = sorted(TERMINAL)
PURGE_CHUNK = 1000


def retention_cutoff(*, now: datetime | None = None) -> datetime:
    """Return the creation time before which terminal messages are purged."""
    return (now or timezone.now()) - timedelta(days=settings.MESSAGING_RETENTION_DAYS)


def messages_purge_chunk(*, cutoff: datetime, limit: int = PURGE_CHUNK) -> int:
    """Purge at most `limit` expired terminal messages in one transaction; return how many."""
    with transaction.atomic():
        ids = list(
            Message.objects.filter(status__in=TERMINAL_STATUSES, created_at__lt=cutoff)
            .order_by("created_at")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return 0
        media_delete_many(media=Media.objects.filter(message_id__in=ids))
        # Attempts, dead letters and idempotency keys cascade; conversations' last_message
        # pointers are cleared (SET_NULL).
        Message.objects.filter(pk__in=ids, status__in=TERMINAL_STATUSES).delete()
    return len(ids)


def messages_purge_expired(*, chunk: int = PURGE_CHUNK, max_chunks: int | None = None) -> int:
    """Purge every expired terminal message, `chunk` per transaction; return how many went."""
    purged, cutoff = purge_in_chunks(messages_purge_chunk, chunk=chunk, max_chunks=max_chunks)
    if purged:
        logger.info("messages.purged", extra={"count": purged, "cutoff": cutoff.isoformat()})
    return purged


def purge_in_chunks(
    purge_chunk: Callable[..., int], *, chunk: int = PURGE_CHUNK, max_chunks: int | None = None
) -> tuple[int, datetime]:
    """Call `purge_chunk(cutoff=, limit=chunk)` until a chunk comes back short; return the total and cutoff.

    Each call is one transaction of at most `chunk` rows (locks and WAL stay small, and two
    beats share the work); `max_chunks` bounds one run. The cutoff is taken once, so a long
    run never chases rows that aged meanwhile.
    """
    cutoff = retention_cutoff()
    purged = chunks = 0
    while max_chunks is None or chunks < max_chunks:
        n = purge_chunk(cutoff=cutoff, limit=chunk)
        purged += n
        chunks += 1
        if n < chunk:
            break
    return purged, cutoff
