"""Circuit breakers: failure ratio over the last calls, half-open after the wait, shared state."""

from __future__ import annotations

import time

import pytest

from apps.common import breaker as breakers
from apps.common.breaker import CircuitBreaker, CircuitOpen
from apps.devices.backends import Notification, Result, Target, Verdict
from apps.devices.backends.live import _guarded


@pytest.fixture(autouse=True)
def _fresh(redis, settings):
    settings.CIRCUIT_BREAKER_RESET_SECONDS = 30
    breakers._closed_until.clear()
    yield
    breakers._closed_until.clear()


def _calls(breaker: CircuitBreaker, outcomes: str) -> str:
    """Record outcomes given as a string of o (ok) and x (failure); return the final state."""
    state = ""
    for outcome in outcomes:
        state = breaker.record(ok=outcome == "o")
    return state


def test_breaker_opens_at_half_failures_over_the_last_ten_calls():
    breaker = CircuitBreaker("t")

    assert _calls(breaker, "oxoxoxoxo") == "closed"  # 9 calls: below the minimum
    assert _calls(breaker, "x") == "open"  # 5 failures out of 10
    assert breaker.state() == "open"
    assert breaker.allow() is False


def test_breaker_stays_closed_below_the_failure_ratio():
    breaker = CircuitBreaker("t")

    assert _calls(breaker, "oooooooxxxx") == "closed"  # last 10: 4 failures
    assert breaker.allow() is True


def test_breaker_needs_ten_calls_before_judging():
    breaker = CircuitBreaker("t")

    assert _calls(breaker, "xxxxxxxxx") == "closed"
    assert breaker.allow() is True


def test_breaker_judges_only_the_last_ten_calls():
    breaker = CircuitBreaker("t")

    # Old failures fall out of the window: 10 oks after them leave 0 of the last 10 failed.
    assert _calls(breaker, "xxxx" + "o" * 10 + "xxxx") == "closed"
    assert _calls(breaker, "x") == "open"  # now 5 of the last 10


def test_open_breaker_half_opens_after_the_wait_lets_one_trial_through_and_closes_on_success(settings):
    settings.CIRCUIT_BREAKER_RESET_SECONDS = 0.3
    breaker = CircuitBreaker("t")
    _calls(breaker, "x" * 10)
    assert breaker.allow() is False

    time.sleep(0.35)

    assert breaker.state() == "half_open"
    assert breaker.allow() is True  # the trial
    assert CircuitBreaker("t").allow() is False  # one trial at a time, in any process
    assert breaker.record(ok=True) == "closed"
    assert breaker.allow() is True
    # Closing forgets the failures that opened it.
    assert _calls(breaker, "x") == "closed"


def test_failed_trial_reopens_the_breaker_for_another_wait(settings):
    settings.CIRCUIT_BREAKER_RESET_SECONDS = 0.3
    breaker = CircuitBreaker("t")
    _calls(breaker, "x" * 10)
    time.sleep(0.35)
    assert breaker.allow() is True

    assert breaker.record(ok=False) == "open"
    assert breaker.allow() is False
    assert breaker.state() == "open"


def test_breaker_state_is_shared_between_instances_and_processes_through_redis():
    _calls(CircuitBreaker("shared"), "x" * 10)
    breakers._closed_until.clear()  # as another process would see it

    assert CircuitBreaker("shared").allow() is False
    assert CircuitBreaker("other").allow() is True


def test_guard_refuses_while_open_without_running_the_call():
    breaker = CircuitBreaker("t")
    _calls(breaker, "x" * 10)
    ran = []

    with pytest.raises(CircuitOpen), breaker.guard():
        ran.append(1)

    assert ran == []


def test_guard_counts_an_exception_as_a_failure_and_reraises_it():
    breaker = CircuitBreaker("t")
    for _ in range(10):
        with pytest.raises(OSError), breaker.guard():
            raise OSError("down")

    assert breaker.state() == "open"


def test_breaker_lets_calls_through_when_redis_is_unreachable(settings):
    from apps.common.redis import redis_client

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.cache_clear()
    breaker = CircuitBreaker("t")

    assert breaker.allow() is True
    assert breaker.record(ok=False) == "closed"
    assert breakers.states()["channel_layer"] == "unknown"


# --- push providers --------------------------------------------------------------------------

NOTE = Notification(title="t", body="b", data={})
TARGETS = [Target(1, "tok-1", "android"), Target(2, "tok-2", "android")]


def test_push_provider_breaker_opens_on_provider_outage_and_then_spares_the_provider():
    calls = []

    def provider_down(notification, targets):
        calls.append(len(targets))
        return [Result(t.device_id, Verdict.TRANSIENT, error="503") for t in targets]

    for _ in range(10):
        _guarded(breakers.PUSH_FCM, provider_down, NOTE, TARGETS)
    assert len(calls) == 10

    results = _guarded(breakers.PUSH_FCM, provider_down, NOTE, TARGETS)

    assert len(calls) == 10  # not called while open
    # Tokens are not blamed for the outage: REJECTED leaves them active and is not retried.
    assert [(r.device_id, r.verdict) for r in results] == [(1, Verdict.REJECTED), (2, Verdict.REJECTED)]
    assert breakers.breaker(breakers.PUSH_APNS).allow() is True  # per provider


def test_push_provider_answering_some_tokens_counts_as_up():
    def partly(notification, targets):
        return [Result(1, Verdict.SENT), Result(2, Verdict.TRANSIENT, error="x")]

    for _ in range(12):
        _guarded(breakers.PUSH_FCM, partly, NOTE, TARGETS)

    assert breakers.breaker(breakers.PUSH_FCM).state() == "closed"


def test_ready_reports_an_open_breaker_as_degraded_but_stays_200(db, anonymous_client):
    _calls(CircuitBreaker(breakers.PUSH_APNS), "x" * 10)

    response = anonymous_client.get("/health/ready")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "degraded"
    assert "push_apns" in body["detail"]
    assert body["breakers"]["push_apns"] == "open"
    assert body["breakers"]["channel_layer"] == "closed"
    assert set(body["checks"].values()) == {"ok"}
