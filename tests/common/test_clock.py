"""The shared clock: a process whose local clock is off still reads Redis's time."""

from __future__ import annotations

import time

import pytest

from apps.common import clock


@pytest.fixture(autouse=True)
def fresh_clock():
    clock.reset()
    yield
    clock.reset()


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_a_skewed_local_clock_reads_the_shared_time(redis, settings, skew):
    settings.MESSAGING_CLOCK_OFFSET_SECONDS = skew
    seconds, micros = redis.time()

    assert clock.timestamp() == pytest.approx(seconds + micros / 1e6, abs=0.5)
    assert clock.now().timestamp() == pytest.approx(time.time(), abs=0.5)  # this host's is right


def test_without_redis_the_local_clock_is_used(settings):
    settings.MESSAGING_CLOCK_OFFSET_SECONDS = 300
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    from apps.common.redis import redis_client

    redis_client.cache_clear()
    try:
        assert clock.timestamp() == pytest.approx(time.time() + 300, abs=0.5)
    finally:
        redis_client.cache_clear()


def test_an_agreeing_clock_is_read_as_is_not_through_a_noisy_offset(redis, settings):
    """Without skew (within the round trip's error), due times keep the local clock's precision."""
    settings.MESSAGING_CLOCK_OFFSET_SECONDS = 0

    clock.timestamp()  # measures
    before = time.time()
    shared = clock.timestamp()
    after = time.time()

    assert before <= shared <= after
