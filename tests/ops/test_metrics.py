"""Metrics move as traffic flows, and /metrics sums every process of the host."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from apps.common import breaker, metrics

ROOT = Path(__file__).resolve().parents[2]


def scrape(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").content.decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_http_requests_are_counted_and_timed_by_view_and_status(anonymous_client, db, redis):
    before = scrape(anonymous_client)
    for _ in range(3):
        anonymous_client.get("/health/live")
    anonymous_client.get("/no/such/path/42")

    after = scrape(anonymous_client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    live = {"view": "health-live", "status": "200"}
    assert delta("messaging_http_requests_total", method="GET", **live) == 3
    assert delta("messaging_http_request_duration_seconds_count", **live) == 3
    assert delta("messaging_http_requests_total", view="<unmatched>", method="GET", status="404") == 1
    # Raw paths never become label values.
    assert not any("/no/such" in str(key) for key in after)


def test_message_recording_functions_count_and_observe(anonymous_client, db, redis):
    before = scrape(anonymous_client)
    metrics.messages_accepted(kind="one_way", priority="high", count=5)
    now = datetime.now(UTC)
    metrics.messages_moved(
        to="delivered", count=2, accepted_at=[(now - timedelta(seconds=2)).timestamp(), now.timestamp()]
    )
    metrics.messages_moved(to="read", count=1)
    metrics.messages_moved(to="failed", count=3, reason="expired")
    metrics.messages_moved(to="pending", count=9)

    after = scrape(anonymous_client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("messaging_messages_accepted_total", kind="one_way", priority="high") == 5
    assert delta("messaging_messages_delivered_total") == 2
    assert delta("messaging_messages_read_total") == 1
    assert delta("messaging_messages_failed_total", reason="expired") == 3
    assert delta("messaging_delivery_seconds_count") == 2
    assert 2 <= delta("messaging_delivery_seconds_sum") < 3
    assert delta("messaging_delivery_seconds_bucket", le="0.01") == 1
    assert delta("messaging_delivery_seconds_bucket", le="2.5") == 2


def test_breaker_gauge_shows_an_open_breaker(anonymous_client, db, redis, settings):
    guarded = breaker.breaker(breaker.PUSH_APNS)
    guarded.reset()
    assert value(scrape(anonymous_client), "messaging_breaker_open", dependency="push_apns") == 0
    for _ in range(settings.CIRCUIT_BREAKER_MIN_CALLS):
        guarded.record(ok=False)

    assert value(scrape(anonymous_client), "messaging_breaker_open", dependency="push_apns") == 1


def test_every_breaker_is_on_every_scrape_as_its_shared_state_says(anonymous_client, db, redis, settings):
    guarded = breaker.breaker(breaker.PUSH_APNS)
    guarded.reset()
    for _ in range(settings.CIRCUIT_BREAKER_MIN_CALLS):
        guarded.record(ok=False)  # this process saw it open
    # Closed elsewhere (another process's trial succeeded): only the shared state says so.
    redis.delete(*guarded.keys)

    samples = scrape(anonymous_client)

    assert {name: value(samples, "messaging_breaker_open", dependency=name) for name in breaker.NAMES} == {
        name: 0 for name in breaker.NAMES
    }
    assert all(("messaging_breaker_open", (("dependency", name),)) in samples for name in breaker.NAMES)


def test_dependency_gauges_come_from_the_readiness_checks(anonymous_client, db, redis):
    samples = scrape(anonymous_client)

    assert value(samples, "messaging_dependency_up", dependency="database") == 1
    assert value(samples, "messaging_dependency_up", dependency="redis") == 1


def test_one_scrape_sums_the_counters_of_every_process(anonymous_client, db, redis):
    before = scrape(anonymous_client)
    metrics.push_sent(platform="android", outcome="sent")
    code = (
        "from apps.common import metrics\n"
        "for _ in range(2): metrics.push_sent(platform='android', outcome='sent')"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), check=True)

    after = scrape(anonymous_client)

    labels = {"platform": "android", "outcome": "sent"}
    assert (
        value(after, "messaging_push_total", **labels) - value(before, "messaging_push_total", **labels) == 3
    )


def test_a_dead_process_connections_leave_the_sum(anonymous_client, db, redis):
    before = value(scrape(anonymous_client), "messaging_websocket_connections")
    code = "from apps.common import metrics; metrics.websocket_connections(4); print('ok', flush=True)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), check=True)

    # The child counted 4 and exited: its live gauge file is gone (atexit or the scrape's sweep).
    assert value(scrape(anonymous_client), "messaging_websocket_connections") == before
