"""The numbers behind the ops dashboard (`/ops/`, `/ops/stats.json`), computed once per interval.

A *sample* is what this host knows at one instant: the running totals and the delivery-latency
histogram that every process wrote to the Prometheus multiprocess directory (the same numbers
`/metrics` exposes), the backlog by status and the dead letters (one query), the open
WebSocket connections and the breakers' shared states.

Per-second rates and latency percentiles need two samples. The server keeps the last
HISTORY_SECONDS of samples in a Redis list and derives rates (delta of totals / delta of time)
and windowed percentiles (delta of histogram buckets over LATENCY_WINDOW_SECONDS) from it, so
every viewer sees the same figures, a page opened now already shows the last two minutes, and
the browser only draws. A counter that went down (processes restarted with an empty directory)
is read as a reset, as Prometheus does.

Cost: however many operators watch, a sample is taken at most once per interval
(OPS_DASHBOARD_INTERVAL_SECONDS, 1 s) per host. The finished answer is cached in Redis for one
interval; a viewer that finds it expired takes a short lock and computes; viewers that lose the
race get the previous answer at once (at most one interval older) rather than waiting or
computing. Samples are per host (the Prometheus directory is), so several web hosts never mix
their counters.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Value
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from redis.exceptions import RedisError

from apps.common import breaker, metrics, multiproc
from apps.common.redis import redis_client
from apps.messaging.models import DeadLetter, Message, Status

HISTORY_SECONDS = 120
LATENCY_WINDOW_SECONDS = 10
# A computation that takes longer than this (a hung database) lets another viewer try.
LOCK_SECONDS = 5
# Only the very first viewer of a host (no previous answer to fall back to) waits this long for
# the computing one.
FIRST_WAIT_SECONDS = LOCK_SECONDS
MAX_SAMPLES = 4 * HISTORY_SECONDS
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
# Undelivered work by status; `scheduled` counts once the scheduled-send status exists.
BACKLOG_STATUSES = tuple(s for s in ("scheduled", "queued", "pending", "sent") if s in Status.values)
RATE_NAMES = ("accepted", "delivered", "read", "failed")
_COUNTERS = {
    "messaging_messages_accepted": "accepted",
    "messaging_messages_delivered": "delivered",
    "messaging_messages_read": "read",
    "messaging_messages_failed": "failed",
}
_BUCKET_BOUNDS = [*metrics.DELIVERY_BUCKETS, math.inf]

# Released only by the viewer that holds it (the lock may have expired and been taken since).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def interval_seconds() -> float:
    """Return how long one computation serves every viewer (and how often the page polls)."""
    return settings.OPS_DASHBOARD_INTERVAL_SECONDS


def _keys() -> dict[str, str]:
    prefix = f"ops:stats:{socket.gethostname()}:"
    return {name: prefix + name for name in ("current", "last", "lock", "samples", "seq")}


# --- one sample --------------------------------------------------------------------------


def _registry() -> CollectorRegistry:
    directory = os.environ.get(multiproc.ENV)
    if not directory:
        return REGISTRY
    multiproc.dead_processes_mark(Path(directory))
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return registry


def metrics_read() -> dict:
    """Return this host's message totals, delivery histogram (cumulative) and open connections."""
    totals = dict.fromkeys(RATE_NAMES, 0.0)
    buckets = [0.0] * len(_BUCKET_BOUNDS)
    connections = 0.0
    for family in _registry().collect():
        if family.name in _COUNTERS:
            name = _COUNTERS[family.name]
            totals[name] += sum(s.value for s in family.samples if s.name.endswith("_total"))
        elif family.name == "messaging_delivery_seconds":
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    buckets[_BUCKET_BOUNDS.index(float(s.labels["le"]))] += s.value
        elif family.name == "messaging_websocket_connections":
            connections += sum(s.value for s in family.samples)
    return {"totals": totals, "buckets": buckets, "connections": max(0, round(connections))}


def backlog_count() -> tuple[dict[str, int], int]:
    """Return undelivered messages by status and the dead letters, in one aggregate query."""
    by_status = (
        Message.objects.filter(status__in=BACKLOG_STATUSES)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    dead_letters = (
        DeadLetter.objects.order_by()
        .annotate(status=Value("dead_letters"))
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    rows = dict(by_status.union(dead_letters, all=True))
    return {status: rows.get(status, 0) for status in BACKLOG_STATUSES}, rows.get("dead_letters", 0)


def sample_take() -> dict:
    """Return one sample of this host: what `metrics_read` sees plus backlog, dead letters, breakers."""
    sample = {"t": time.time(), **metrics_read()}
    try:
        sample["backlog"], sample["dead_letters"] = backlog_count()
    except DatabaseError:
        # The dashboard matters most while things break: show the rest.
        sample["backlog"], sample["dead_letters"] = None, None
    sample["breakers"] = breaker.states()
    return sample


# --- from samples to figures -------------------------------------------------------------


def _increase(now: float, before: float) -> float:
    """Return how much a counter grew; a counter that went down was reset (start from zero)."""
    return now - before if now >= before else now


def quantile(q: float, bounds: list[float], counts: list[float]) -> float | None:
    """Return the q-quantile of cumulative bucket `counts` with upper `bounds`, as Prometheus'
    histogram_quantile does (linear within the bucket); None without observations.
    """
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is the best we know
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1)
        lower, below = bound, cumulative
    return lower


def _latency_ms(newer: dict, older: dict | None) -> dict[str, float | None]:
    counts = newer["buckets"]
    if older is not None:
        counts = [_increase(a, b) for a, b in zip(counts, older["buckets"], strict=True)]
        # A reset in one bucket but not another would break monotonicity: keep it cumulative.
        counts = [max(counts[: i + 1]) for i in range(len(counts))]
    result = {}
    for name, q in PERCENTILES:
        value = quantile(q, _BUCKET_BOUNDS, counts)
        result[name] = None if value is None else round(value * 1000, 1)
    return result


def _window_start(samples: list[dict], i: int, seconds: float) -> dict | None:
    """Return the newest sample at least `seconds` older than samples[i] (else the oldest)."""
    t = samples[i]["t"] - seconds
    for j in range(i - 1, -1, -1):
        if samples[j]["t"] <= t:
            return samples[j]
    return samples[0] if i > 0 else None


def figures(samples: list[dict]) -> dict:
    """Return the dashboard's answer for `samples` (oldest first): the latest values and series."""
    series: dict[str, list] = {"t": []}
    for name in (*RATE_NAMES, *(n for n, _ in PERCENTILES), "connections", "dead_letters", "breakers_open"):
        series[name] = []
    for status in BACKLOG_STATUSES:
        series[f"backlog_{status}"] = []
    for i, sample in enumerate(samples):
        previous = samples[i - 1] if i else None
        series["t"].append(round(sample["t"], 3))
        dt = sample["t"] - previous["t"] if previous else 0
        for name in RATE_NAMES:
            rate = _increase(sample["totals"][name], previous["totals"][name]) / dt if dt > 0 else None
            series[name].append(None if rate is None else round(rate, 2))
        window = _window_start(samples, i, LATENCY_WINDOW_SECONDS)
        # The first sample of a page has no window: leave latency empty rather than all-time.
        latency = _latency_ms(sample, window) if window is not None else {n: None for n, _ in PERCENTILES}
        for name, _ in PERCENTILES:
            series[name].append(latency[name])
        series["connections"].append(sample["connections"])
        series["dead_letters"].append(sample["dead_letters"])
        series["breakers_open"].append(
            sum(state in ("open", "half_open") for state in sample["breakers"].values())
        )
        for status in BACKLOG_STATUSES:
            backlog = sample["backlog"]
            series[f"backlog_{status}"].append(None if backlog is None else backlog.get(status, 0))
    latest = samples[-1]
    return {
        "generated_at": datetime.fromtimestamp(latest["t"], UTC).isoformat(),
        "sample": latest.get("id"),
        "interval_seconds": interval_seconds(),
        "history_seconds": HISTORY_SECONDS,
        "latency_window_seconds": LATENCY_WINDOW_SECONDS,
        "host": socket.gethostname(),
        "now": {
            "per_second": {name: series[name][-1] for name in RATE_NAMES},
            "totals": {name: int(value) for name, value in latest["totals"].items()},
            "latency_ms": {name: series[name][-1] for name, _ in PERCENTILES},
            "backlog": latest["backlog"],
            "dead_letters": latest["dead_letters"],
            "connections": latest["connections"],
            "breakers": latest["breakers"],
        },
        "series": series,
    }


# --- once per interval for every viewer --------------------------------------------------


def _recent(raw: Iterable[bytes], now: float) -> list[dict]:
    samples = [json.loads(item) for item in raw]
    samples = [s for s in samples if now - s["t"] <= HISTORY_SECONDS]
    samples.sort(key=lambda s: s["t"])
    return samples


def _compute_and_publish(client, keys: dict[str, str]) -> dict:
    sample = sample_take()
    sample["id"] = client.incr(keys["seq"])
    client.lpush(keys["samples"], json.dumps(sample))
    client.ltrim(keys["samples"], 0, MAX_SAMPLES - 1)
    client.expire(keys["samples"], HISTORY_SECONDS * 2)
    answer = figures(_recent(client.lrange(keys["samples"], 0, -1), sample["t"]))
    body = json.dumps(answer)
    pipe = client.pipeline(transaction=False)
    pipe.set(keys["current"], body, px=max(1, int(interval_seconds() * 1000)))
    pipe.set(keys["last"], body, ex=HISTORY_SECONDS)
    pipe.execute()
    return answer


def stats_current() -> dict:
    """Return the dashboard's figures, taking a new sample only if the last is an interval old."""
    try:
        return _shared_stats()
    except RedisError:
        return _local_stats()


def _shared_stats() -> dict:
    client = redis_client()
    keys = _keys()
    cached = client.get(keys["current"])
    if cached is not None:
        return json.loads(cached)
    token = uuid.uuid4().hex
    if client.set(keys["lock"], token, nx=True, ex=LOCK_SECONDS):
        try:
            return _compute_and_publish(client, keys)
        finally:
            client.eval(_RELEASE, 1, keys["lock"], token)
    # Someone else is computing this interval's figures: the previous ones will do (only the
    # first viewer of a host, with nothing previous, waits for them).
    last = client.get(keys["last"])
    deadline = time.monotonic() + FIRST_WAIT_SECONDS
    while last is None and time.monotonic() < deadline:
        time.sleep(0.05)
        last = client.get(keys["last"])
    if last is None:
        raise RedisError("no figures published in time")
    return json.loads(last)


_local_lock = threading.Lock()
_local: dict = {}


def _local_stats() -> dict:
    """Without Redis: this process's figures, one sample per interval, without history."""
    with _local_lock:
        cached = _local.get("answer")
        if cached is not None and time.time() - _local["at"] < interval_seconds():
            return cached
        sample = sample_take()
        answer = {**figures([sample]), "degraded": "Redis is unavailable: no history, no rates."}
        _local.update(answer=answer, at=sample["t"])
        return answer
