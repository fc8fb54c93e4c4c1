"""Flow control: per-tier sliding-window rate limits (429) and backpressure (503), no loss."""

from __future__ import annotations

import threading
import uuid
from functools import partial

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.common.ratelimit import MultiWindowLimiter
from apps.common.redis import redis_client
from apps.messaging import flow, services
from apps.messaging.models import Message, Status
from tests.concurrency import run_together
from tests.factories import SenderFactory

SEND_URL = "/api/v1/messages/"
BATCH_URL = "/api/v1/messages/batch/"


@pytest.fixture
def limits_on(settings, redis):
    settings.MESSAGING_RATE_LIMITS_ENABLED = True


def _send(client, recipient, content="x"):
    return client.post(
        SEND_URL, {"recipient_phone_number": recipient.phone_number, "content": content}, format="json"
    )


def _batch(client, recipient, count: int):
    items = [{"recipient_phone_number": recipient.phone_number, "content": f"m{i}"} for i in range(count)]
    return client.post(BATCH_URL, {"messages": items}, format="json")


# --- the limiter itself: property over concurrent callers -----------------------------------


@hypothesis_settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    windows=st.lists(
        st.tuples(st.integers(min_value=1, max_value=12), st.integers(min_value=30, max_value=250)),
        min_size=1,
        max_size=2,
        unique_by=lambda w: w[1],
    ),
    callers=st.lists(
        st.lists(st.integers(min_value=1, max_value=4), min_size=5, max_size=25), min_size=2, max_size=5
    ),
)
def test_limiter_never_admits_more_than_the_limit_in_any_window_across_concurrent_callers(
    windows, callers, redis
):
    limiter = MultiWindowLimiter(
        name=f"prop-{uuid.uuid4().hex}", windows=[(lim, ms / 1000) for lim, ms in windows]
    )
    admitted: list[tuple[int, int]] = []  # (time on Redis's clock in ms, cost)
    lock = threading.Lock()

    def caller(costs: list[int]) -> None:
        for cost in costs:
            decision = limiter.hit("one-sender", cost=cost)
            if decision.allowed:
                assert decision.at_ms > 0
                with lock:
                    admitted.append((decision.at_ms, cost))
            else:
                assert decision.retry_after > 0

    run_together(*(partial(caller, costs) for costs in callers))
    for limit, window_ms in windows:
        # The window a hit is judged in is (t - window, t]; the worst window ends at a hit.
        for end, _ in admitted:
            in_window = sum(cost for at, cost in admitted if end - window_ms < at <= end)
            assert in_window <= limit, (limit, window_ms, end)


def test_basic_hour_limit_refuses_even_when_the_minute_has_room(redis):
    limiter = flow.send_limiter("basic")
    minute = 60_000
    for i in range(10):
        assert limiter.hit("s1", cost=100, now_ms=1_000_000 + i * minute).allowed

    refused = limiter.hit("s1", cost=1, now_ms=1_000_000 + 10 * minute)

    assert not refused.allowed
    # The hour's oldest hundred leave at 1,000,000 + 3,600,000.
    assert refused.retry_after == pytest.approx((1_000_000 + 3_600_000 - (1_000_000 + 10 * minute)) / 1000)
    # Refused by the hour, it did not use up the minute either.
    assert limiter.hit("s1", cost=1, now_ms=1_000_000 + 61 * minute).allowed


def test_refused_hit_is_not_counted_in_any_window(redis):
    limiter = MultiWindowLimiter(name="t", windows=[(5, 60), (6, 3600)])
    assert limiter.hit("a", cost=5, now_ms=1_000).allowed
    assert not limiter.hit("a", cost=1, now_ms=2_000).allowed

    # After the minute, one more fits the hour (5 + 1 ≤ 6), which it would not had the
    # refused hit been recorded there.
    assert limiter.hit("a", cost=1, now_ms=62_000).allowed
    assert not limiter.hit("a", cost=1, now_ms=63_000).allowed


# --- the API: per tier ---------------------------------------------------------------------


def test_basic_sender_gets_429_with_retry_after_past_100_a_minute_and_nothing_stored(
    limits_on, sender, sender_client, mobile_user
):
    assert _batch(sender_client, mobile_user, 100).status_code == 202

    response = _send(sender_client, mobile_user, "one too many")

    assert response.status_code == 429
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "100 per minute" in response.json()["detail"]
    assert Message.objects.count() == 100
    assert not Message.objects.filter(content="one too many").exists()


def test_batch_counts_each_message_against_the_limit(limits_on, sender_client, mobile_user):
    assert _batch(sender_client, mobile_user, 60).status_code == 202

    response = _batch(sender_client, mobile_user, 41)

    assert response.status_code == 429
    assert Message.objects.count() == 60
    assert _batch(sender_client, mobile_user, 40).status_code == 202


def test_batch_larger_than_the_tier_allows_is_refused_saying_so(limits_on, sender_client, mobile_user):
    response = _batch(sender_client, mobile_user, 101)

    assert response.status_code == 429
    assert "exceed" in response.json()["detail"]
    assert Message.objects.count() == 0


@pytest.mark.parametrize(("tier", "limit"), [("premium", 1000), ("enterprise", 10_000)])
def test_higher_tiers_have_their_own_minute_limit(db, limits_on, tier, limit):
    sender = SenderFactory(tier=tier)
    limiter = flow.send_limiter(tier)

    assert limiter.hit(str(sender.pk), cost=limit, now_ms=5_000).allowed
    assert not limiter.hit(str(sender.pk), cost=1, now_ms=64_000).allowed
    assert limiter.hit(str(sender.pk), cost=1, now_ms=65_001).allowed


def test_limits_are_per_sender(limits_on, sender_client, other_sender_client, mobile_user):
    assert _batch(sender_client, mobile_user, 100).status_code == 202

    assert _send(other_sender_client, mobile_user).status_code == 202
    assert _send(sender_client, mobile_user).status_code == 429


def test_send_is_accepted_when_redis_is_unreachable(limits_on, settings, sender_client, mobile_user):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    redis_client.cache_clear()
    flow.backlog_cache_clear()

    response = _send(sender_client, mobile_user, "during the outage")

    assert response.status_code == 202, response.json()
    assert Message.objects.get().status == Status.QUEUED


# --- backpressure ----------------------------------------------------------------------------


@pytest.fixture
def low_backlog_limit(settings, redis):
    settings.MESSAGING_BACKLOG_LIMIT = 3
    settings.MESSAGING_BACKLOG_CACHE_SECONDS = 0
    flow.backlog_cache_clear()
    yield
    flow.backlog_cache_clear()


def test_sends_past_the_backlog_limit_get_503_with_retry_after_and_nothing_accepted_is_lost(
    low_backlog_limit, sender_client, mobile_user
):
    accepted = [_send(sender_client, mobile_user, f"m{i}") for i in range(4)]
    assert [r.status_code for r in accepted] == [202] * 4  # the 4th saw a backlog of 3 (≤ limit)

    refused = _send(sender_client, mobile_user, "refused")
    refused_batch = _batch(sender_client, mobile_user, 2)

    assert refused.status_code == 503 and refused_batch.status_code == 503
    assert refused["Retry-After"].isdigit() and int(refused["Retry-After"]) >= 1
    assert "retry later" in refused.json()["detail"]
    assert sorted(Message.objects.values_list("content", flat=True)) == ["m0", "m1", "m2", "m3"]
    # The accepted ones are still delivered: the recipient is offline, so they wait as pending.
    for response in accepted:
        assert services.message_deliver(message_id=response.json()["id"]) == "offline"
    assert set(Message.objects.values_list("status", flat=True)) == {Status.PENDING}
    # Offline-pending messages are not workers' backlog: sends are accepted again.
    assert _send(sender_client, mobile_user, "after").status_code == 202


def test_backlog_counts_broker_queue_lengths(low_backlog_limit, redis, sender_client, mobile_user):
    for queue in ("high", "low"):
        redis.lpush(queue, "task-a", "task-b")

    response = _send(sender_client, mobile_user)

    assert response.status_code == 503
    assert flow.backlog_size(cap=100) == 4
    assert Message.objects.count() == 0


def test_backlog_counts_due_retries_but_not_future_ones(low_backlog_limit, sender, mobile_user):
    from datetime import timedelta

    from django.utils import timezone

    from tests.factories import MessageFactory

    soon = timezone.now() + timedelta(minutes=5)
    for status, due in [
        (Status.QUEUED, soon),
        (Status.PENDING, timezone.now()),
        (Status.PENDING, soon),
        (Status.PENDING, None),
        (Status.SENT, timezone.now()),
        (Status.DELIVERED, None),
    ]:
        MessageFactory(sender=sender, recipient=mobile_user, status=status, next_attempt_at=due)

    assert flow.backlog_size(cap=100) == 3


def test_backlog_figure_is_cached_per_process(settings, redis, sender, mobile_user):
    settings.MESSAGING_BACKLOG_CACHE_SECONDS = 60
    flow.backlog_cache_clear()
    assert flow.backlog_size(cap=100) == 0
    services.message_send(sender=sender, recipient_phone_number=mobile_user.phone_number, content="x")

    assert flow.backlog_size(cap=100) == 0  # the cached figure
    flow.backlog_cache_clear()
    assert flow.backlog_size(cap=100) == 1
