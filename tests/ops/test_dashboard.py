"""The ops dashboard: who may see it, what its figures say, and that they cost one computation per
interval however many operators watch."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.common import breaker, metrics
from apps.common.redis import redis_client
from apps.messaging.models import DeadLetter, Status
from apps.ops import dashboard
from tests.factories import MessageFactory, SenderFactory


@pytest.fixture
def staff(db):
    return SenderFactory(is_staff=True)


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def expire_current() -> None:
    """End the current interval now (as one second passing would)."""
    redis_client().delete(dashboard._keys()["current"])


# --- who may see it ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ops/", "/ops/stats.json"])
def test_anonymous_is_sent_to_the_admin_login_and_back(client, db, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/admin/login/?next={path}"


@pytest.mark.parametrize("path", ["/ops/", "/ops/stats.json"])
def test_logged_in_non_staff_is_refused_with_403(client, sender, redis, path):
    client.force_login(sender)

    response = client.get(path)

    assert response.status_code == 403
    assert b"sample" not in response.content


def test_inactive_staff_is_not_let_in(client, db, redis):
    client.force_login(SenderFactory(is_staff=True, is_active=False))

    assert client.get("/ops/stats.json").status_code in (302, 403)


def test_staff_gets_the_page_with_locally_served_charts(staff_client, redis):
    page = staff_client.get("/ops/")

    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-interval-ms="1000"' in html
    assert "/static/vendor/uplot/uPlot.iife.min.js" in html
    assert "/static/ops/dashboard.js" in html
    assert "//cdn" not in html and "https://" not in html
    # The vendored library itself is served by the app (WhiteNoise), not a CDN.
    script = staff_client.get("/static/vendor/uplot/uPlot.iife.min.js")
    assert script.status_code == 200
    assert b"uPlot" in b"".join(script.streaming_content)


def test_the_login_form_leads_back_to_the_dashboard(client, db, redis):
    user = SenderFactory(is_staff=True)
    user.set_password("a-long-test-password")
    user.save()

    response = client.post(
        "/admin/login/?next=/ops/",
        {"username": user.username, "password": "a-long-test-password", "next": "/ops/"},
    )

    assert response.status_code == 302 and response["Location"] == "/ops/"
    assert client.get("/ops/").status_code == 200


# --- what it says ------------------------------------------------------------------------


def test_stats_report_backlog_dead_letters_breakers_and_totals(staff_client, redis):
    MessageFactory.create_batch(2, status=Status.QUEUED)
    MessageFactory(status=Status.PENDING)
    failed = MessageFactory(status=Status.FAILED)
    DeadLetter.objects.create(message=failed, reason="expired", payload={})
    metrics.messages_accepted(kind="one_way", priority="normal", count=3)

    body = staff_client.get("/ops/stats.json").json()

    now = body["now"]
    assert now["backlog"]["queued"] == 2
    assert now["backlog"]["pending"] == 1
    assert now["backlog"]["sent"] == 0
    assert now["dead_letters"] == 1
    assert set(now["breakers"]) == set(breaker.NAMES)
    assert set(now["breakers"].values()) <= {"closed", "open", "half_open", "unknown"}
    assert now["totals"]["accepted"] >= 3
    assert set(body["series"]) >= {"t", "accepted", "delivered", "failed", "p50", "p95", "p99", "connections"}
    assert all(len(values) == len(body["series"]["t"]) for values in body["series"].values())


def test_rates_and_latency_follow_the_metrics_between_samples(staff_client, redis):
    first = staff_client.get("/ops/stats.json").json()
    metrics.messages_accepted(kind="one_way", priority="normal", count=40)
    now = datetime.now(UTC)
    metrics.messages_moved(
        to="delivered", count=40, accepted_at=[(now - timedelta(milliseconds=30)).timestamp()] * 40
    )
    expire_current()

    second = staff_client.get("/ops/stats.json").json()

    assert second["sample"] == first["sample"] + 1
    assert second["now"]["totals"]["accepted"] - first["now"]["totals"]["accepted"] == 40
    assert second["now"]["per_second"]["accepted"] > 0
    assert second["now"]["per_second"]["delivered"] > 0
    # 30 ms lies in the (25 ms, 50 ms] bucket.
    assert 25 <= second["now"]["latency_ms"]["p50"] <= 50
    assert len(second["series"]["t"]) == 2


def test_ten_viewers_within_an_interval_cause_one_aggregate_query(client, db, redis, settings):
    # A long interval: a slow machine must not end it between the requests.
    settings.OPS_DASHBOARD_INTERVAL_SECONDS = 60
    viewers = []
    for _ in range(10):
        viewer = type(client)()
        viewer.force_login(SenderFactory(is_staff=True))
        viewers.append(viewer)

    with CaptureQueriesContext(connection) as queries:
        answers = [viewer.get("/ops/stats.json").json() for viewer in viewers]

    # The first viewer computed (one query for backlog and dead letters), the nine others got
    # its answer; their only database work was their session and user lookup.
    aggregate = [q["sql"] for q in queries.captured_queries if "messaging_" in q["sql"]]
    assert len(aggregate) == 1, aggregate
    assert {a["sample"] for a in answers} == {1}
    assert all(a == answers[0] for a in answers)
    assert int(redis.get(dashboard._keys()["seq"])) == 1


def test_viewers_arriving_together_on_a_cold_cache_compute_once(transactional_db, redis, settings):
    settings.OPS_DASHBOARD_INTERVAL_SECONDS = 60
    answers, errors = [], []
    start = threading.Barrier(8)

    def view():
        try:
            start.wait()
            answers.append(dashboard.stats_current())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=view) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert not errors
    assert len(answers) == 8
    assert {a["sample"] for a in answers} == {1}
    assert redis.llen(dashboard._keys()["samples"]) == 1


def test_backlog_and_dead_letters_are_one_query(db):
    MessageFactory(status=Status.SENT)

    with CaptureQueriesContext(connection) as queries:
        backlog, dead_letters = dashboard.backlog_count()

    assert len(queries.captured_queries) == 1
    assert backlog["sent"] == 1 and dead_letters == 0


def test_without_redis_the_page_still_gets_figures(staff_client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.cache_clear()
    dashboard._local.clear()

    response = staff_client.get("/ops/stats.json")

    assert response.status_code == 200
    body = response.json()
    assert "Redis" in body["degraded"]
    assert body["now"]["breakers"]
    assert body["now"]["per_second"]["accepted"] is None


# --- the arithmetic ----------------------------------------------------------------------


def sample(t: float, accepted: float, buckets: list[float]) -> dict:
    return {
        "t": t,
        "totals": {"accepted": accepted, "delivered": 0, "read": 0, "failed": 0},
        "buckets": buckets,
        "connections": 0,
        "backlog": {},
        "dead_letters": 0,
        "breakers": {},
    }


def cumulative(counts_by_bound: dict[float, int]) -> list[float]:
    running, result = 0, []
    for bound in [*metrics.DELIVERY_BUCKETS, math.inf]:
        running += counts_by_bound.get(bound, 0)
        result.append(running)
    return result


def test_rates_are_deltas_over_time_and_a_counter_reset_starts_from_zero():
    empty = cumulative({})
    samples = [sample(100, 1000, empty), sample(102, 1100, empty), sample(103, 30, empty)]

    series = dashboard.figures(samples)["series"]

    assert series["accepted"] == [None, 50.0, 30.0]


def test_percentiles_come_from_the_window_not_all_time():
    # Long ago: 100 slow deliveries (10 s); in the window: 100 fast ones (in 10-25 ms).
    old = cumulative({10: 100})
    new = cumulative({10: 100, 0.025: 100})
    samples = [sample(100, 0, old), sample(120, 0, new)]

    latency = dashboard.figures(samples)["now"]["latency_ms"]

    assert 10 <= latency["p50"] <= 25
    assert latency["p99"] <= 25


def test_quantile_interpolates_like_prometheus():
    bounds = [0.1, 0.2, math.inf]

    assert dashboard.quantile(0.5, bounds, [0, 10, 10]) == pytest.approx(0.15)
    assert dashboard.quantile(0.99, bounds, [0, 0, 5]) == 0.2
    assert dashboard.quantile(0.5, bounds, [0, 0, 0]) is None
