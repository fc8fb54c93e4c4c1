"""Every Prometheus family the service exposes (SPEC.md section 9), and one function to record each.

The lowest layer: messaging, devices, realtime, common and ops import it; it imports nothing
of the project. Values go to PROMETHEUS_MULTIPROC_DIR (set by the settings before this module
is imported, apps/common/multiproc.py), one file per process, and /metrics sums every
process of the host in one scrape (apps/ops/apis.py). Without that variable (a bare script)
the values stay in the process's default registry.

Recording is cheap (an mmap write, measured in the README), so callers record inline.
Callers pass status codes and names as they are; the label values are closed sets.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

# Delivery latency: accepted → ack recorded; the target p99 is 100 ms, retries take minutes.
DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10)

MESSAGES_ACCEPTED = Counter(
    "messaging_messages_accepted", "Messages accepted and persisted", ["kind", "priority"]
)
MESSAGES_DELIVERED = Counter("messaging_messages_delivered", "Messages acknowledged by a device")
MESSAGES_READ = Counter("messaging_messages_read", "Messages marked read by their recipient")
MESSAGES_FAILED = Counter("messaging_messages_failed", "Messages given up (dead-lettered)", ["reason"])
DELIVERY_SECONDS = Histogram(
    "messaging_delivery_seconds",
    "Time from a message's acceptance to its ack being recorded",
    buckets=DELIVERY_BUCKETS,
)
# Live: a process that dies takes its sockets with it, so its share must leave the sum.
WEBSOCKET_CONNECTIONS = Gauge(
    "messaging_websocket_connections", "Open WebSocket connections", multiprocess_mode="livesum"
)
PUSH = Counter(
    "messaging_push", "Push notifications by platform and provider verdict", ["platform", "outcome"]
)
WEBHOOK_DELIVERIES = Counter("messaging_webhook_deliveries", "Status webhook delivery attempts", ["outcome"])
# The breaker's state is shared (Redis); whichever process saw it last knows it best.
BREAKER_OPEN = Gauge(
    "messaging_breaker_open",
    "1 while a dependency's circuit breaker is open or half-open",
    ["dependency"],
    multiprocess_mode="mostrecent",
)
DEPENDENCY_UP = Gauge(
    "messaging_dependency_up",
    "1 if the dependency passed its last readiness check, else 0",
    ["dependency"],
    multiprocess_mode="mostrecent",
)
HTTP_REQUESTS = Counter("messaging_http_requests", "HTTP requests answered", ["view", "method", "status"])
HTTP_SECONDS = Histogram(
    "messaging_http_request_duration_seconds",
    "Time to answer an HTTP request, through the middleware chain",
    ["view", "status"],
    buckets=HTTP_BUCKETS,
)

# messaging_messages_moved(to=...) targets and their counters.
DELIVERED, READ, FAILED = "delivered", "read", "failed"


def messages_accepted(*, kind: str, priority: str, count: int = 1) -> None:
    """Count `count` messages of `kind` and `priority` accepted (after their commit)."""
    MESSAGES_ACCEPTED.labels(kind=kind, priority=priority).inc(count)


def messages_moved(*, to: str, count: int, reason: str = "", accepted_at: Iterable[float] = ()) -> None:
    """Count `count` messages moved to status `to` (delivered, read or failed; others are ignored).

    For `delivered`, observe accepted → now in messaging_delivery_seconds for each time in
    `accepted_at` (the messages' created_at, epoch seconds). `reason` labels `failed`.
    """
    if count <= 0:
        return
    if to == DELIVERED:
        MESSAGES_DELIVERED.inc(count)
        now = time.time()
        for at in accepted_at:
            DELIVERY_SECONDS.observe(max(0.0, now - at))
    elif to == READ:
        MESSAGES_READ.inc(count)
    elif to == FAILED:
        MESSAGES_FAILED.labels(reason=reason or "unknown").inc(count)


def push_sent(*, platform: str, outcome: str) -> None:
    """Count one push to a token of `platform` (android, ios) with the provider's `outcome`."""
    PUSH.labels(platform=platform, outcome=outcome).inc()


def webhook_delivery(*, outcome: str) -> None:
    """Count one webhook delivery attempt (success, failure, gave_up, ...)."""
    WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()


def breaker_state(dependency: str, open: bool) -> None:
    """Record whether `dependency`'s breaker is open (half-open counts as open)."""
    BREAKER_OPEN.labels(dependency=dependency).set(1 if open else 0)


def dependency_up(dependency: str, up: bool) -> None:
    """Record the result of `dependency`'s readiness check."""
    DEPENDENCY_UP.labels(dependency=dependency).set(1 if up else 0)


def websocket_connections(delta: int) -> None:
    """Add `delta` (+1 on connect, -1 on disconnect) to this process's open connections."""
    WEBSOCKET_CONNECTIONS.inc(delta)


def http_request(*, view: str, method: str, status: int, seconds: float) -> None:
    """Count one answered HTTP request and observe its duration."""
    code = str(status)
    HTTP_REQUESTS.labels(view=view, method=method, status=code).inc()
    HTTP_SECONDS.labels(view=view, status=code).observe(seconds)
