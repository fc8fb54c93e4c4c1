"""Retry schedule: 1, 2, 4, 8, 16, 32 s by default, capped, jitter inside [d/2, d]."""

from __future__ import annotations

import pytest
from django.test import override_settings
from hypothesis import given
from hypothesis import strategies as st

from apps.common.backoff import retries_exhausted, retry_delay

bases = st.sampled_from([0.5, 1, 2, 3])
caps = st.sampled_from([1, 10, 60, 300, 3600])
retry_counts = st.integers(min_value=1, max_value=500)


def test_default_schedule_is_one_to_thirty_two_seconds():
    assert [retry_delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 32]


def test_default_cap_is_three_hundred_seconds():
    assert retry_delay(9) == 256
    assert retry_delay(10) == 300
    assert retry_delay(10_000) == 300


def test_cap_follows_settings(settings):
    settings.MESSAGING_RETRY_MAX_SECONDS = 10

    assert [retry_delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_base_follows_settings(settings):
    settings.MESSAGING_RETRY_BASE_SECONDS = 3

    assert [retry_delay(n) for n in range(1, 5)] == [3, 6, 12, 24]


@pytest.mark.parametrize("retry_count", [0, -1])
def test_retry_count_starts_at_one(retry_count):
    with pytest.raises(ValueError):
        retry_delay(retry_count)


def test_retries_exhausted_after_six_by_default():
    assert [retries_exhausted(n) for n in range(8)] == [False] * 6 + [True] * 2


def test_retries_exhausted_follows_settings(settings):
    settings.MESSAGING_MAX_RETRIES = 2

    assert [retries_exhausted(n) for n in range(4)] == [False, False, True, True]


@given(base=bases, cap=caps, n=retry_counts)
def test_delay_is_monotonic_and_never_above_the_cap(base, cap, n):
    with override_settings(MESSAGING_RETRY_BASE_SECONDS=base, MESSAGING_RETRY_MAX_SECONDS=cap):
        here, nxt = retry_delay(n), retry_delay(n + 1)
    assert 0 < here <= nxt <= cap


@given(base=bases, cap=caps, n=retry_counts)
def test_jittered_delay_stays_within_half_and_full_delay(base, cap, n):
    with override_settings(MESSAGING_RETRY_BASE_SECONDS=base, MESSAGING_RETRY_MAX_SECONDS=cap):
        full = retry_delay(n)
        jittered = retry_delay(n, jitter=True)
    assert full / 2 <= jittered <= full <= cap
