"""Data protection jobs of Celery beat."""

from __future__ import annotations

from celery import shared_task

from apps.messaging.services import messages_purge_expired


@shared_task(acks_late=True)
def purge_expired_messages() -> int:
    """Purge terminal messages older than MESSAGING_RETENTION_DAYS (chunked, safe to re-run)."""
    return messages_purge_expired()
