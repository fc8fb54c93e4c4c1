"""Coalesced dispatch: the single sends committed in a process leave as shared chunk tasks.

Publishing a Celery task costs the web process about 1.5 ms of CPU, and delivering one message
per task costs a worker about 5.6 ms, against 0.4 ms per message in a chunk of 100
(`bulk.messages_deliver_chunk`). So a committed send hands its row to this process's
dispatcher and returns; a background thread publishes whatever has gathered as chunk tasks and
goes back for more. At low load each message leaves alone, at once; under load the rows that
arrive while one publish is in flight leave together in the next.

Nothing here is the record of what must be delivered: the message row is (`queued`, with a
dispatch deadline). A row still buffered when the process dies, or refused by a broker that is
down, is re-dispatched by `sweep_queued` once its deadline passes, as for any lost dispatch.

MESSAGING_DISPATCH_COALESCE=false publishes at commit, in the committing thread (the unit
tests do, to see the tasks as soon as the transaction ends).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings

from apps.ops.logging import get_correlation_id, new_correlation_id

from .models import Priority

logger = logging.getLogger(__name__)

QUEUE_FOR_PRIORITY = {Priority.HIGH: "high", Priority.NORMAL: "default", Priority.LOW: "low"}

Row = tuple[uuid.UUID, str]  # (message id, priority)
# Rows buffered beyond this are left to the sweep rather than held in memory.
MAX_BUFFERED = 100_000
# Most rows published per round, so that one round's tasks go out before the next gathers.
MAX_PER_ROUND = 5_000


class Dispatcher:
    """A buffer of committed rows and the thread that publishes it as chunk tasks."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # Also in a forked child: the parent's rows are the parent's to publish, and its lock
        # may have been held by another thread at the fork.
        self._rows: list[tuple[Row, str]] = []
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = 0  # rounds being published

    def submit(self, rows: Iterable[Row]) -> None:
        """Hand committed rows over for publishing; return at once."""
        correlation_id = get_correlation_id()
        with self._wakeup:
            if len(self._rows) >= MAX_BUFFERED:
                logger.warning("message.dispatch_buffer_full", extra={"buffered": len(self._rows)})
                return
            self._rows.extend((row, correlation_id) for row in rows)
            self._ensure_thread()
            self._wakeup.notify_all()

    def flush(self) -> int:
        """Publish what was handed over so far; return once it has left (this thread's count)."""
        published = 0
        while batch := self._take():
            published += self._publish_round(batch)
        with self._wakeup:
            while self._busy:
                self._wakeup.wait()
        return published

    def _take(self) -> list[tuple[Row, str]]:
        with self._wakeup:
            batch, self._rows = self._rows[:MAX_PER_ROUND], self._rows[MAX_PER_ROUND:]
            self._busy += bool(batch)
            return batch

    def _publish_round(self, batch: list[tuple[Row, str]]) -> int:
        try:
            return _publish(batch)
        finally:
            with self._wakeup:
                self._busy -= 1
                self._wakeup.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="message-dispatch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._wakeup:
                while not self._rows:
                    self._wakeup.wait()
            if batch := self._take():
                try:
                    self._publish_round(batch)
                except Exception:  # the sweep re-dispatches; the thread must live on
                    logger.exception("message.dispatch_round_failed")


def _publish(batch: list[tuple[Row, str]]) -> int:
    ids = {cid for _, cid in batch}
    # One request's rows keep its correlation id; a round shared by several requests gets its
    # own (each message's status lines carry its request's id, see lifecycle.transition).
    correlation_id = ids.pop() if len(ids) == 1 else new_correlation_id()
    return messages_dispatch([row for row, _ in batch], correlation_id=correlation_id)


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


_dispatcher = Dispatcher()


def dispatch_committed(rows: list[Row]) -> None:
    """Dispatch rows whose transaction has committed: coalesced, or at once (see module doc)."""
    if settings.MESSAGING_DISPATCH_COALESCE:
        _dispatcher.submit(rows)
    else:
        messages_dispatch(rows)


def dispatch_flush() -> int:
    """Publish what this process still holds (at exit, and in tests)."""
    return _dispatcher.flush()


atexit.register(dispatch_flush)
os.register_at_fork(after_in_child=_dispatcher._reset)
