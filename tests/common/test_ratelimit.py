"""The Redis sliding-window limiter: never more than `limit` hits in any window, shared by all
clients, atomic under concurrency, and open (with a warning) when Redis is unreachable."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.common.ratelimit import SlidingWindowLimiter
from apps.common.redis import redis_client
from tests.concurrency import run_together

WINDOW_MS = 60_000


def limiter(limit: int = 10) -> SlidingWindowLimiter:
    return SlidingWindowLimiter(name="test", limit=limit, window_seconds=WINDOW_MS / 1000)


def test_eleventh_hit_in_a_minute_is_refused_until_the_first_leaves(redis):
    rl = limiter()
    for n in range(10):
        decision = rl.hit("u", now_ms=1_000_000 + n * 1000)
        assert (decision.allowed, decision.remaining) == (True, 9 - n)

    refused = rl.hit("u", now_ms=1_030_000)
    assert not refused.allowed
    # The first hit (at 1,000,000) leaves the window at 1,060,000: 30 s from now.
    assert refused.retry_after == 30.0
    assert refused.retry_after_header == "30"

    assert rl.hit("u", now_ms=1_059_999).allowed is False
    assert rl.hit("u", now_ms=1_060_000).allowed is True
    # Refused hits are not recorded: exactly 10 remain in the window.
    assert redis.zcard(rl.key("u")) == 10


def test_identities_have_separate_windows(redis):
    rl = limiter(limit=1)
    assert rl.hit("a", now_ms=1).allowed
    assert rl.hit("b", now_ms=1).allowed
    assert not rl.hit("a", now_ms=2).allowed


def test_cost_counts_each_unit_and_a_cost_above_the_limit_never_fits(redis):
    rl = limiter(limit=10)
    assert rl.hit("batch", cost=7, now_ms=0).allowed
    refused = rl.hit("batch", cost=4, now_ms=10)
    assert not refused.allowed and refused.remaining == 3
    assert rl.hit("batch", cost=3, now_ms=20).allowed
    assert not rl.hit("other", cost=11, now_ms=0).allowed
    assert redis.zcard(rl.key("other")) == 0


def test_window_key_expires_with_the_window(redis):
    rl = limiter()
    rl.hit("u")

    assert 0 < redis.pttl(rl.key("u")) <= WINDOW_MS


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limit=st.integers(1, 5),
    gaps=st.lists(st.integers(0, 30_000), min_size=1, max_size=30),
)
def test_no_window_ever_admits_more_than_the_limit(redis, limit, gaps):
    redis.flushdb()
    rl = limiter(limit)
    now, admitted = 0, []
    for gap in gaps:
        now += gap
        decision = rl.hit("p", now_ms=now)
        in_window = [t for t in admitted if t > now - WINDOW_MS]
        # Admitted exactly when fewer than `limit` hits are in the last window.
        assert decision.allowed == (len(in_window) < limit)
        if decision.allowed:
            admitted.append(now)
        else:
            # Retry-After points at the moment the oldest hit in the window leaves it.
            assert round(decision.retry_after * 1000) == in_window[len(in_window) - limit] + WINDOW_MS - now
    for t in admitted:
        assert sum(1 for u in admitted if t <= u < t + WINDOW_MS) <= limit


def test_concurrent_clients_share_one_limit(redis):
    rl = limiter(limit=10)
    results = []

    def burst() -> None:
        results.extend(rl.hit("shared").allowed for _ in range(5))

    run_together(*[burst] * 8)

    assert results.count(True) == 10
    assert results.count(False) == 30


def test_unreachable_redis_allows_and_warns(settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.cache_clear()

    decision = limiter().hit("u")

    assert decision.allowed
    assert [r.message for r in caplog.records if r.name == "apps.common.ratelimit"] == [
        "ratelimit.unavailable"
    ]


@pytest.mark.parametrize(("seconds", "header"), [(0.001, "1"), (1.0, "1"), (1.2, "2"), (59.9, "60")])
def test_retry_after_header_rounds_up_to_whole_seconds(seconds, header):
    from apps.common.ratelimit import Decision

    assert Decision(allowed=False, remaining=0, retry_after=seconds).retry_after_header == header
