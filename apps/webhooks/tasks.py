"""Celery tasks of webhook delivery, on their own `webhooks` queue (CELERY_TASK_ROUTES): thin, by ids.

`acks_late` (the project default) is safe here: a task run twice finds the lane taken or the
events already claimed or delivered.
"""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from . import delivery, services


@shared_task
def deliver_endpoint(endpoint_id: int) -> int:
    """Deliver an endpoint's due events for one time slice; requeue itself if some are left."""
    # Cleared first: an event recorded from now on wakes another task (which may find the lane
    # taken; this one looks again after releasing it).
    delivery.wake_flag_clear(endpoint_id)
    report = delivery.lane_run(endpoint_id=endpoint_id, budget_seconds=settings.WEBHOOK_SLICE_SECONDS)
    if report.more:
        delivery.lanes_wake([endpoint_id])
    return report.attempts


@shared_task
def sweep_webhooks() -> int:
    """Wake every endpoint with due events: retries, and events whose wake-up was lost."""
    return delivery.lanes_sweep()


@shared_task
def purge_webhook_events() -> int:
    """Purge settled webhook events older than MESSAGING_RETENTION_DAYS (chunked, safe to re-run)."""
    return services.events_purge_expired()
