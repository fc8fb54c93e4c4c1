"""Publishing delivery on the Celery lane of each priority.

Two kinds of task: `deliver_due` asks a worker to claim a lane's due `queued` messages itself
(the outbox relay, relay.py, publishes it), and `deliver_chunk` carries the ids of `pending`
messages that the retry paths make due. A publish the broker refuses is not an error here: the
messages keep their status and due time, and the relay or the sweeps find them again.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings

from apps.common.logging import get_correlation_id

from .models import Priority

logger = logging.getLogger(__name__)

QUEUE_FOR_PRIORITY = {Priority.HIGH: "high", Priority.NORMAL: "default", Priority.LOW: "low"}


def messages_dispatch(
    rows: Iterable[tuple[uuid.UUID, str]],
    *,
    countdown: float | None = None,
    correlation_id: str | None = None,
) -> int:
    """Enqueue the delivery of (message id, priority) rows; return how many messages were enqueued.

    One task per chunk of MESSAGING_DELIVERY_CHUNK messages on its priority's lane, high first,
    each chunk in the order given (callers list a recipient's messages together, in seq order,
    so that they leave in one frame event). A broker outage is not an error here: the messages
    stay `queued` (or `pending`) and the sweeps dispatch them once the broker is back.
    """
    from .tasks import deliver_chunk  # tasks.py imports the services, which import this module

    by_priority: dict[str, list[str]] = defaultdict(list)
    for pk, priority in rows:
        by_priority[priority].append(str(pk))
    size = settings.MESSAGING_DELIVERY_CHUNK
    kwargs = {"correlation_id": get_correlation_id() if correlation_id is None else correlation_id}
    enqueued = 0
    for priority in (Priority.HIGH, Priority.NORMAL, Priority.LOW):
        ids = by_priority.pop(priority, [])
        for start in range(0, len(ids), size):
            chunk = ids[start : start + size]
            try:
                deliver_chunk.apply_async(
                    args=[chunk], kwargs=kwargs, queue=QUEUE_FOR_PRIORITY[priority], countdown=countdown
                )
            except Exception as exc:  # noqa: BLE001 - any broker failure leaves it to the sweep
                logger.warning("message.dispatch_failed", extra={"count": len(chunk), "error": repr(exc)})
                return enqueued
            enqueued += len(chunk)
    return enqueued


def lanes_dispatch(priorities: Iterable[str]) -> int:
    """Ask for one `deliver_due` task on the lane of each of `priorities`; return how many went."""
    from .tasks import deliver_due

    published = 0
    for priority in priorities:
        try:
            deliver_due.apply_async(args=[priority], queue=QUEUE_FOR_PRIORITY[priority])
        except Exception as exc:  # noqa: BLE001 - the relay's next look finds the lane again
            logger.warning("message.dispatch_failed", extra={"lane": priority, "error": repr(exc)})
            return published
        published += 1
    return published
