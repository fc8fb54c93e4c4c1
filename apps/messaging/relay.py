"""The outbox relay: committed `queued` messages leave for delivery from the database, not memory.

A stored message is its own outbox entry: `queued`, due (`next_attempt_at`) at once. The relay
looks for the lanes (priorities) that have due queued messages and asks for a `deliver_due`
task on each; the worker that takes it claims the lane's oldest due messages itself (`SELECT …
FOR UPDATE SKIP LOCKED`, services/chunks.py) and delivers them in the same transaction. So no
message is written to before its delivery (an earlier relay stamped a lease on each row it
claimed: a full row version and index entries per message), no task carries ids, and a task
that is lost (a broker down, a worker killed) leaves its messages `queued` and due, where the
relay's next look finds them. Several relays (two beats) only ever publish a task too many,
which claims nothing.

It is woken at once after a commit that makes messages `queued`: the committing process
publishes on the Redis channel `messaging:outbox` (after commit, so the rows are visible when
the relay looks), and the relay listens there. PostgreSQL's NOTIFY was tried first and
measured: a notifying transaction holds a database-wide lock from its pre-commit to the end of
its WAL flush, so concurrent sends committed one at a time (under 16 callers, 4 of 4 active
sends were waiting on `Lock:object`). A wake-up that is lost (Redis down) only costs latency:
the relay also looks every MESSAGING_RELAY_POLL_SECONDS.

Under a stream of single sends every commit would be a round of its own, and every round a
task for a chunk of one message: a worker then spends more on the task than on the delivery.
So a round starts at most every MESSAGING_RELAY_GATHER_SECONDS (the first commit after a quiet
spell leaves at once, the commits that follow within the window leave together at its end),
and a lane whose last task still waits in the broker gets no other: its messages gather in the
database meanwhile, and the task claims them together.

The relay runs as a thread of Celery beat (messaging_project/celery.py), one of the three
Procfile processes. MESSAGING_RELAY_ON_COMMIT (the unit tests) also runs a round right after
each commit that stores messages, so a test sees the delivery task as soon as its send returns.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from redis.exceptions import RedisError

from apps.common import clock
from apps.common.redis import redis_client

from .dispatch import QUEUE_FOR_PRIORITY, lanes_dispatch
from .flow import broker_client
from .models import Message, Priority, Status

logger = logging.getLogger(__name__)

CHANNEL = "messaging:outbox"
WAKE_SLICE = 0.5
LANE_RECHECK_SECONDS = 0.005
LANE_RECHECK_MAX_SECONDS = 0.1


# What a wake-up says: messages were queued, or scheduled (the relay looks at when they are due).
QUEUED_NOTE = b""
SCHEDULED_NOTE = b"scheduled"


def relay_notify(*, scheduled: bool = False) -> None:
    """Wake the relays once the current transaction commits (it made messages `queued` or `scheduled`)."""
    transaction.on_commit(_wake_scheduled if scheduled else _wake)


def _wake_scheduled() -> None:
    _publish(SCHEDULED_NOTE)


def _wake() -> None:
    _publish(QUEUED_NOTE)
    if settings.MESSAGING_RELAY_ON_COMMIT:
        relay_round()


def _publish(note: bytes) -> None:
    try:
        redis_client().publish(CHANNEL, note)
    except RedisError as exc:  # the relay's poll finds the rows all the same
        logger.warning("relay.wake_failed", extra={"error": repr(exc)})


def lanes_due(*, now: datetime, priorities: tuple[str, ...] = tuple(Priority.values)) -> list[str]:
    """Return the priorities among `priorities` that have `queued` messages due by `now`, high first.

    One indexed probe per lane (message_queued_idx: priority, next_attempt_at), however deep
    the lane's backlog.
    """
    due = Message.objects.filter(status=Status.QUEUED, next_attempt_at__lte=now)
    return [
        priority
        for priority in (Priority.HIGH, Priority.NORMAL, Priority.LOW)
        if priority in priorities and due.filter(priority=priority).exists()
    ]


def relay_round(*, priorities: tuple[str, ...] = tuple(Priority.values)) -> int:
    """Ask for a delivery task on each of `priorities`' lanes with due messages; return how many."""
    return lanes_dispatch(lanes_due(now=clock.now(), priorities=priorities))


class Relay:
    """The relay loop: wait for a notification (or the poll interval), then run rounds."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None
        self._round_started = -float("inf")  # time.monotonic() of the last round's start

    def start(self) -> Relay:
        self.thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop the loop and wait for it (at most a wake-up slice)."""
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def _run(self) -> None:
        poll = settings.MESSAGING_RELAY_POLL_SECONDS
        try:
            while not self._stop.is_set():
                try:
                    self._listen(poll)
                except Exception:  # Redis or the database down: log, wait, start over
                    logger.exception("relay.failed")
                    close_old_connections()
                    self._stop.wait(min(poll, 1))
        finally:
            connection.close()

    def _round(self) -> bool:
        """Run a round for the lanes whose broker queue is empty; return whether one was skipped.

        A lane whose last task still waits in the broker is left alone: its messages gather in
        the database meanwhile and leave together once a worker takes the task. So a chunk
        grows with the load (one message when idle, hundreds when the workers are busy)
        instead of the queue filling with chunks of one.
        """
        self._round_started = time.monotonic()
        open_lanes = lanes_with_room()
        count = relay_round(priorities=open_lanes) if open_lanes else 0
        if count:
            logger.info("relay.published", extra={"lanes": count})
        close_old_connections()
        return len(open_lanes) < len(Priority.values)

    def _listen(self, poll: float) -> None:
        # SQLite (local runs) shares one file between processes: look often instead of waiting long.
        if connection.vendor != "postgresql":
            poll = min(poll, 0.05)
        subscription = redis_client().pubsub(ignore_subscribe_messages=True)
        subscription.subscribe(CHANNEL)
        try:
            self._round()  # whatever was committed before we listened
            promoted, due_at = _promote_due()
            if promoted:
                self._round()
            next_poll = time.monotonic() + poll
            recheck = LANE_RECHECK_SECONDS
            while not self._stop.is_set():
                # Wake on a notification, when the poll interval is over or when the next
                # scheduled message is due; look at the stop flag at least every WAKE_SLICE.
                timeout = min(WAKE_SLICE, next_poll - time.monotonic(), _seconds_until(due_at))
                notes = set()
                note = subscription.get_message(timeout=max(0.0, timeout))
                if note is not None:
                    notes.add(note["data"])
                    self._gather()
                    note = subscription.get_message(timeout=0)
                while note is not None:  # one round serves every commit announced so far
                    notes.add(note["data"])
                    note = subscription.get_message(timeout=0)
                polled = time.monotonic() >= next_poll
                promoted = 0
                if SCHEDULED_NOTE in notes or polled or _seconds_until(due_at) <= 0:
                    promoted, due_at = _promote_due()
                if notes or polled or promoted:  # promoted messages leave in this same round
                    waiting = self._round()
                    # A lane held back is looked at again soon, whether or not more arrives;
                    # the longer it stays held (workers busy or stopped), the less often.
                    next_poll = time.monotonic() + (recheck if waiting else poll)
                    recheck = min(recheck * 2, LANE_RECHECK_MAX_SECONDS) if waiting else LANE_RECHECK_SECONDS
        finally:
            subscription.close()

    def _gather(self) -> None:
        """Wait out the rest of the gather window that the last round opened."""
        rest = self._round_started + settings.MESSAGING_RELAY_GATHER_SECONDS - time.monotonic()
        if rest > 0:
            self._stop.wait(rest)


def _promote_due() -> tuple[int, datetime | None]:
    """Promote the scheduled messages that are due; return how many, and when the next one is."""
    # schedule.py wakes the relays itself (relay_notify): imported here, not at the top.
    from .services.schedule import scheduled_next_due_at, scheduled_promote_due

    promoted = scheduled_promote_due()
    return promoted, scheduled_next_due_at()


def _seconds_until(at: datetime | None) -> float:
    return float("inf") if at is None else (at - clock.now()).total_seconds()


def lanes_with_room() -> tuple[str, ...]:
    """Return the priorities whose Celery queue holds no delivery task waiting for a worker."""
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return tuple(Priority.values)
    try:
        pipe = broker_client(url).pipeline(transaction=False)
        for priority in Priority.values:
            pipe.llen(QUEUE_FOR_PRIORITY[priority])
        lengths = pipe.execute()
    except RedisError:
        return tuple(Priority.values)  # publishing will tell; a lost task leaves its messages due
    return tuple(p for p, n in zip(Priority.values, lengths, strict=True) if n == 0)


def relay_start() -> Relay:
    """Start this process's relay thread (Celery beat calls it at start)."""
    return Relay().start()
