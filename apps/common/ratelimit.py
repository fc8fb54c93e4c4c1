"""A sliding-window rate limiter on Redis, shared by every process (SPEC.md section 4).

Each key is a sorted set of the admitted hits, scored by their time in milliseconds. One Lua
script drops the hits older than the window, counts the rest and either records the new hit(s)
or answers how long until enough of the oldest leave the window: atomic, so concurrent web
instances can never admit more than `limit` hits in any window.

Availability over accounting: if Redis cannot be reached the hit is allowed and a warning is
logged. The limiter protects the service from floods; refusing every request while Redis is
down would turn a Redis outage into an outage of everything it guards.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass

from redis.exceptions import RedisError

from .redis import redis_client

logger = logging.getLogger(__name__)

# KEYS[1]: the window's sorted set. ARGV: now in ms (empty: Redis's clock), window in ms,
# limit, cost, a unique member prefix. Returns {allowed (0|1), remaining, retry_after_ms}.
_SLIDING_WINDOW = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count + cost <= limit then
  for i = 1, cost do
    redis.call('ZADD', KEYS[1], now, ARGV[5] .. ':' .. i)
  end
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, limit - count - cost, 0}
end
if cost > limit then
  return {0, limit - count, window}
end
-- The hit fits once the (count + cost - limit) oldest hits have left the window.
local oldest = redis.call('ZRANGE', KEYS[1], count + cost - limit - 1, count + cost - limit - 1, 'WITHSCORES')
return {0, limit - count, tonumber(oldest[2]) + window - now}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    retry_after: float
    """Seconds until the refused hit would fit (0 when allowed)."""
    at_ms: int = 0
    """When the decision was taken, on Redis's clock (0 when unknown)."""

    @property
    def retry_after_header(self) -> str:
        """Return `retry_after` as a Retry-After value: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


class SlidingWindowLimiter:
    """At most `limit` hits per key in any `window_seconds`-long window."""

    def __init__(self, *, name: str, limit: int, window_seconds: float) -> None:
        self.name = name
        self.limit = limit
        self.window_ms = int(window_seconds * 1000)

    def key(self, identity: str) -> str:
        return f"ratelimit:{self.name}:{identity}"

    def hit(self, identity: str, *, cost: int = 1, now_ms: int | None = None) -> Decision:
        """Record `cost` hits for `identity` if they fit in the window; return the decision.

        `now_ms` overrides Redis's clock (tests); by default every process uses the server's
        time, so clock skew between machines does not matter.
        """
        client = redis_client()
        try:
            # EVALSHA, loading the script on first use.
            script = client.register_script(_SLIDING_WINDOW)
            allowed, remaining, retry_ms = script(
                keys=[self.key(identity)],
                args=["" if now_ms is None else now_ms, self.window_ms, self.limit, cost, uuid.uuid4().hex],
            )
        except RedisError as exc:
            logger.warning(
                "ratelimit.unavailable",
                extra={"limiter": self.name, "identity": identity, "error": repr(exc)},
            )
            return Decision(allowed=True, remaining=self.limit, retry_after=0.0)
        return Decision(allowed=bool(allowed), remaining=int(remaining), retry_after=int(retry_ms) / 1000)


# KEYS: one sorted set per window. ARGV: now in ms (empty: Redis's clock), cost, a unique member
# prefix, then (window ms, limit) per key. The hits are recorded in every window or in none.
# Returns {allowed (0|1), remaining (the smallest), retry_after_ms (the largest), now}.
_MULTI_WINDOW = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local cost = tonumber(ARGV[2])
local remaining = nil
local retry = 0
for i = 1, #KEYS do
  local window = tonumber(ARGV[2 + 2 * i])
  local limit = tonumber(ARGV[3 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[i])
  if remaining == nil or limit - count < remaining then remaining = limit - count end
  if count + cost > limit then
    local wait = window
    if cost <= limit then
      local idx = count + cost - limit - 1
      local oldest = redis.call('ZRANGE', KEYS[i], idx, idx, 'WITHSCORES')
      wait = math.max(1, tonumber(oldest[2]) + window - now)
    end
    if wait > retry then retry = wait end
  end
end
if retry > 0 then return {0, remaining, retry, now} end
for i = 1, #KEYS do
  for j = 1, cost do
    redis.call('ZADD', KEYS[i], now, ARGV[3] .. ':' .. j)
  end
  redis.call('PEXPIRE', KEYS[i], tonumber(ARGV[2 + 2 * i]))
end
return {1, remaining - cost, 0, now}
"""


class MultiWindowLimiter:
    """Several sliding windows at once (e.g. 100 a minute and 1,000 an hour), all or nothing.

    A hit is admitted only if it fits in every window, and then counts in every window: a hit
    refused by the hourly limit does not use up the minute's allowance, and vice versa.
    """

    def __init__(self, *, name: str, windows: list[tuple[int, float]]) -> None:
        """`windows` are (limit, window_seconds) pairs."""
        self.name = name
        self.windows = [(limit, int(seconds * 1000)) for limit, seconds in windows]

    def keys(self, identity: str) -> list[str]:
        return [f"ratelimit:{self.name}:{window_ms}:{identity}" for _, window_ms in self.windows]

    def hit(self, identity: str, *, cost: int = 1, now_ms: int | None = None) -> Decision:
        """Record `cost` hits for `identity` if they fit in every window; return the decision."""
        args: list[object] = ["" if now_ms is None else now_ms, cost, uuid.uuid4().hex]
        for limit, window_ms in self.windows:
            args += [window_ms, limit]
        try:
            script = redis_client().register_script(_MULTI_WINDOW)
            allowed, remaining, retry_ms, at_ms = script(keys=self.keys(identity), args=args)
        except RedisError as exc:
            logger.warning(
                "ratelimit.unavailable",
                extra={"limiter": self.name, "identity": identity, "error": repr(exc)},
            )
            return Decision(allowed=True, remaining=min(limit for limit, _ in self.windows), retry_after=0.0)
        return Decision(
            allowed=bool(allowed),
            remaining=int(remaining),
            retry_after=int(retry_ms) / 1000,
            at_ms=int(at_ms),
        )
