"""Celery tasks of the push fallback: thin, by ids, re-reading state each time.

None of them is `acks_late`: a push redelivered after a worker died could wake the phone
twice, which is worse than the rare lost push (the next message, or a reconnect, covers it).
"""

from __future__ import annotations

import logging

from celery import shared_task

from . import services

logger = logging.getLogger(__name__)


@shared_task
def push_first(recipient_id: int) -> str:
    """The push of the message that opened the recipient's window: at once."""
    outcome = services.push_window_close(recipient_id=recipient_id)
    logger.info("push.first", extra={"recipient_id": recipient_id, "outcome": outcome})
    return outcome


@shared_task
def push_window_end(recipient_id: int) -> str:
    """The end of the window: one more push if messages arrived during it."""
    outcome = services.push_window_trail(recipient_id=recipient_id)
    logger.info("push.window_end", extra={"recipient_id": recipient_id, "outcome": outcome})
    return outcome


@shared_task
def push_retry(message_id: str, device_ids: list[int], attempt: int) -> int:
    report = services.push_send(message_id=message_id, device_ids=device_ids, attempt=attempt)
    return len(report.results)


@shared_task
def release_push_holds() -> int:
    return services.push_holds_release()
