"""The one clock that due times are set and compared on, whichever process or host looks.

A due time written by one process is compared by another: a web process stamps an expiry or an
outbox due time, beat's relay and the worker's sweeps compare it; a web process records a
heartbeat, the worker decides from it whether the recipient is online. With the hosts' clocks
5 minutes apart, a TTL would expire early, the relay would leave messages `queued` for 5
minutes, and the worker would see every connection stale (or dead ones online for 5 minutes
more, retrying into them until the message fails). So every process reads the time of the one
Redis server they all share (its TIME, measured at most every CLOCK_SYNC_SECONDS and kept as
an offset from the local clock) rather than its own.

MESSAGING_CLOCK_OFFSET_SECONDS shifts this process's local clock, as a skewed host's would be:
the fault tests (tests/e2e/test_faults.py) give the worker and beat ±5 minutes and show that
nothing changes. If Redis cannot be asked, the last offset measured (0 at first) stays.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from django.conf import settings
from redis.exceptions import RedisError

from .redis import redis_client

CLOCK_SYNC_SECONDS = 30.0
# Offsets smaller than this are measurement noise, not skew (hosts kept by NTP agree to a few ms).
CLOCK_TOLERANCE_SECONDS = 0.05

_lock = threading.Lock()
_offset = 0.0  # Redis's time minus this process's (skewed) local time
_synced_at: float | None = None  # monotonic


def _local() -> float:
    return time.time() + settings.MESSAGING_CLOCK_OFFSET_SECONDS


def _sync() -> None:
    global _offset, _synced_at
    try:
        before = _local()
        seconds, micros = redis_client().time()
        after = _local()
    except RedisError:
        _synced_at = time.monotonic()  # ask again at the next period, not on every call
        return
    # Redis read its clock about halfway through the round trip. An offset within the error of
    # that estimate (a round trip) is no skew: the local clock is kept, to the microsecond.
    offset = seconds + micros / 1e6 - (before + after) / 2
    _offset = offset if abs(offset) > max(CLOCK_TOLERANCE_SECONDS, after - before) else 0.0
    _synced_at = time.monotonic()


def timestamp() -> float:
    """Return the shared time as seconds since the epoch (presence heartbeats)."""
    if _synced_at is None or time.monotonic() - _synced_at >= CLOCK_SYNC_SECONDS:
        with _lock:
            if _synced_at is None or time.monotonic() - _synced_at >= CLOCK_SYNC_SECONDS:
                _sync()
    return _local() + _offset


def now() -> datetime:
    """Return the shared time as an aware datetime (due times, expiries, ack deadlines)."""
    return datetime.fromtimestamp(timestamp(), tz=UTC)


def reset() -> None:
    """Forget the measured offset (tests that point the process at another Redis)."""
    global _offset, _synced_at
    with _lock:
        _offset, _synced_at = 0.0, None
