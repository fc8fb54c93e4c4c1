"""Celery tasks: thin wrappers that take ids, re-read state and call a service.

Each is idempotent (the services move statuses by compare-and-set), which is what makes
`acks_late` safe: a task redelivered after a worker died simply finds less to do.
"""

from __future__ import annotations

import logging

from celery import shared_task

from apps.accounts.party import Party
from apps.common.logging import correlation_context
from apps.common.transient import TRANSIENT

from . import services

logger = logging.getLogger(__name__)

# Infrastructure hiccups (database, channel layer or Redis unreachable) are retried with
# backoff; the message's own status is untouched by them, so the sweeps still cover a task
# that gives up.


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=1, retry_backoff_max=30, max_retries=8)
def deliver_backlog(recipient_id: int, kind: str) -> int:
    # Plain arguments for the broker's JSON; Party refuses an unknown kind.
    return services.recipient_deliver_backlog(recipient=Party(kind, recipient_id))


@shared_task(acks_late=True)
def sweep_ack_timeouts() -> int:
    return services.sweep_ack_timeouts()


@shared_task(acks_late=True)
def sweep_pending() -> int:
    return services.sweep_pending()


@shared_task(acks_late=True)
def sweep_expired() -> int:
    return services.sweep_expired()


@shared_task(acks_late=True)
def sweep_stale_connections() -> int:
    return services.sweep_stale_connections()


@shared_task(acks_late=True)
def purge_idempotency_keys() -> int:
    return services.idempotency_keys_purge()


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=1, retry_backoff_max=30, max_retries=8)
def deliver_due(priority: str) -> dict:
    # No ids: the worker claims the lane's oldest due queued messages itself (a retry claims
    # afresh). An unknown lane matches no message.
    report = services.messages_deliver_due(priority=priority)
    logger.info("message.deliver_due", extra={"lane": priority, "count": report.claimed, "sent": report.sent})
    return {
        "claimed": report.claimed,
        "sent": report.sent,
        "offline": report.offline,
        "failed": report.failed,
    }


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=1, retry_backoff_max=30, max_retries=8)
def deliver_chunk(message_ids: list[str], correlation_id: str = "") -> dict:
    with correlation_context(correlation_id):
        report = services.messages_deliver_chunk(message_ids=message_ids)
        logger.info("message.deliver_chunk", extra={"count": len(message_ids), "sent": report.sent})
        return {"sent": report.sent, "offline": report.offline, "failed": report.failed}


@shared_task(acks_late=True, autoretry_for=TRANSIENT, retry_backoff=1, retry_backoff_max=30, max_retries=8)
def expand_broadcast(broadcast_id: str, after: int) -> int | None:
    return services.broadcast_expand_chunk(broadcast_id=broadcast_id, after=after)


@shared_task(acks_late=True)
def sweep_broadcasts() -> int:
    return services.sweep_broadcasts()
