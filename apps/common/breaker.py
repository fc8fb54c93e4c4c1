"""Circuit breakers per dependency, with their state shared by every process in Redis.

SPEC.md section 4: a breaker opens after at least CIRCUIT_BREAKER_FAILURE_RATIO failures over
the last CIRCUIT_BREAKER_WINDOW calls (once at least CIRCUIT_BREAKER_MIN_CALLS were made), lets
one trial call through after CIRCUIT_BREAKER_RESET_SECONDS (half-open), closes when the trial
succeeds and re-opens when it fails.

No library fitted: pybreaker shares state in Redis but counts consecutive failures, not a
ratio; circuitbreaker keeps state per process; purgatory and aiobreaker are asyncio-only. So
each decision here is one Lua script, atomic across processes, on Redis's own clock.

Availability over protection: if Redis cannot be reached the breaker lets calls through (the
call itself then fails or not on its own); an unreachable breaker must not stop deliveries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from redis.exceptions import RedisError

from . import metrics
from .redis import redis_client

logger = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

# The dependencies guarded; their states show in /health/ready.
CHANNEL_LAYER = "channel_layer"
PUSH_FCM = "push_fcm"
PUSH_APNS = "push_apns"
STORAGE = "storage"
NAMES = (CHANNEL_LAYER, PUSH_FCM, PUSH_APNS, STORAGE)

# A half-open trial that never reports (its process died) frees the trial after this long.
TRIAL_LEASE_MS = 10_000
# A process trusts a `closed` it saw this recently without asking Redis again: the hot path
# (one channel-layer send per recipient) then costs one script call, the outcome's.
CLOSED_CACHE_SECONDS = 1.0

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: state hash, outcomes list, trial lock. ARGV: reset ms, trial lease ms.
# Returns {allowed (0|1), state}.
_ALLOW = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {1, state} end
if state == 'open' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at') or '0')
  if now - opened < tonumber(ARGV[1]) then return {0, state} end
  state = 'half_open'
  redis.call('HSET', KEYS[1], 'state', state)
end
-- Half-open: one trial at a time.
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', tonumber(ARGV[2])) then return {1, state} end
return {0, state}
"""
)

# KEYS: state hash, outcomes list, trial lock. ARGV: ok (1|0), window, min calls, ratio.
# Returns the state after recording.
_RECORD = (
    _NOW
    + """
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local ok = ARGV[1] == '1'
if state == 'half_open' then
  redis.call('DEL', KEYS[3], KEYS[2])
  if ok then
    redis.call('HSET', KEYS[1], 'state', 'closed')
    return 'closed'
  end
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  return 'open'
end
if state == 'open' then return state end
redis.call('LPUSH', KEYS[2], ok and '0' or '1')
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
local outcomes = redis.call('LRANGE', KEYS[2], 0, -1)
if #outcomes < tonumber(ARGV[3]) then return state end
local failures = 0
for _, v in ipairs(outcomes) do if v == '1' then failures = failures + 1 end end
if failures >= tonumber(ARGV[4]) * #outcomes then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
  return 'open'
end
return state
"""
)


class CircuitOpen(ConnectionError):
    """The dependency's breaker is open: do not call it now, try again later."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"circuit breaker {name!r} is open")


# name -> monotonic time until which this process may assume `closed`.
_closed_until: dict[str, float] = {}


class CircuitBreaker:
    def __init__(self, name: str) -> None:
        self.name = name
        self.keys = [f"breaker:{name}", f"breaker:{name}:calls", f"breaker:{name}:trial"]

    def _remember(self, state: str) -> None:
        metrics.breaker_state(self.name, state != CLOSED)
        if state == CLOSED:
            _closed_until[self.name] = time.monotonic() + CLOSED_CACHE_SECONDS
        else:
            _closed_until.pop(self.name, None)

    def allow(self) -> bool:
        """Return whether a call may go to the dependency now (claiming the trial if half-open)."""
        if _closed_until.get(self.name, 0.0) > time.monotonic():
            return True
        try:
            script = redis_client().register_script(_ALLOW)
            allowed, state = script(
                keys=self.keys, args=[int(settings.CIRCUIT_BREAKER_RESET_SECONDS * 1000), TRIAL_LEASE_MS]
            )
        except RedisError as exc:
            logger.warning("breaker.unavailable", extra={"breaker": self.name, "error": repr(exc)})
            return True
        state = state.decode() if isinstance(state, bytes) else state
        self._remember(state)
        return bool(allowed)

    def record(self, *, ok: bool) -> str:
        """Record a call's outcome; return the state it leaves the breaker in."""
        try:
            script = redis_client().register_script(_RECORD)
            state = script(
                keys=self.keys,
                args=[
                    "1" if ok else "0",
                    settings.CIRCUIT_BREAKER_WINDOW,
                    settings.CIRCUIT_BREAKER_MIN_CALLS,
                    settings.CIRCUIT_BREAKER_FAILURE_RATIO,
                ],
            )
        except RedisError as exc:
            logger.warning("breaker.unavailable", extra={"breaker": self.name, "error": repr(exc)})
            return CLOSED
        state = state.decode() if isinstance(state, bytes) else state
        self._remember(state)
        if state == OPEN and not ok:
            logger.warning("breaker.open", extra={"breaker": self.name})
        return state

    def state(self) -> str:
        """Return the shared state: closed, open or half_open (open past its wait reads half_open)."""
        values = redis_client().hmget(self.keys[0], ["state", "opened_at"])
        state = values[0].decode() if values[0] else CLOSED
        if state == OPEN:
            seconds, micros = redis_client().time()
            now_ms = seconds * 1000 + micros // 1000
            if now_ms - int(values[1] or 0) >= settings.CIRCUIT_BREAKER_RESET_SECONDS * 1000:
                return HALF_OPEN
        return state

    def reset(self) -> None:
        """Close the breaker and forget its history (operators, tests)."""
        redis_client().delete(*self.keys)
        _closed_until.pop(self.name, None)
        metrics.breaker_state(self.name, False)

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run the block as one call to the dependency: refused with CircuitOpen while open.

        An exception out of the block counts as a failure (and propagates), anything else as a
        success.
        """
        if not self.allow():
            raise CircuitOpen(self.name)
        try:
            yield
        except BaseException:
            self.record(ok=False)
            raise
        self.record(ok=True)


def breaker(name: str) -> CircuitBreaker:
    """Return the breaker guarding dependency `name`."""
    return CircuitBreaker(name)


def states() -> dict[str, str]:
    """Return the state of every breaker, or `unknown` if Redis cannot tell."""
    result = {}
    for name in NAMES:
        try:
            result[name] = breaker(name).state()
        except RedisError:
            result[name] = "unknown"
    return result
