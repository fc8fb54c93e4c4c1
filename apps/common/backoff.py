"""Retry schedule: exponential backoff with a cap and optional jitter (SPEC.md section 2)."""

from __future__ import annotations

import random

from django.conf import settings


def retry_delay(retry_count: int, *, jitter: bool = False) -> float:
    """Return the delay in seconds before retry number `retry_count` (1-based): 1, 2, 4, 8 ...

    With `jitter`, the delay is drawn from [delay / 2, delay] so that many messages that timed
    out together do not retry in lockstep; it never exceeds the un-jittered delay.
    """
    if retry_count < 1:
        raise ValueError("retry_count starts at 1")
    base = settings.MESSAGING_RETRY_BASE_SECONDS
    cap = settings.MESSAGING_RETRY_MAX_SECONDS
    delay = min(cap, base * 2 ** min(retry_count - 1, 62))
    if jitter:
        delay = random.uniform(delay / 2, delay)
    return delay


def retries_exhausted(retry_count: int) -> bool:
    """Return whether a message that has already been retried `retry_count` times must give up."""
    return retry_count >= settings.MESSAGING_MAX_RETRIES
