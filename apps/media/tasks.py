"""Celery tasks of media: thin wrappers that take ids and call a service."""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError
from celery import shared_task

from apps.common.transient import TRANSIENT

from . import services

logger = logging.getLogger(__name__)

MAX_RETRIES = 5


@shared_task(bind=True, acks_late=True, max_retries=MAX_RETRIES)
def make_thumbnails(self, media_id: str) -> str:
    """Make an image's thumbnails; retry storage hiccups, then give the media up as failed."""
    try:
        outcome = services.media_thumbnails_make(media_id=media_id)
    except (*TRANSIENT, OSError, BotoCoreError) as exc:
        if self.request.retries >= MAX_RETRIES:
            services.media_fail(media_id=media_id, reason=f"thumbnails could not be stored: {exc!r}")
            return "failed"
        raise self.retry(exc=exc, countdown=2**self.request.retries) from exc
    logger.info("media.thumbnails", extra={"media_id": media_id, "outcome": outcome})
    return outcome


@shared_task(acks_late=True)
def sweep_media() -> dict[str, int]:
    return services.media_sweep()
