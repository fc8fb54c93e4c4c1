"""Health and metrics endpoints for operators and load balancers."""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.db import DatabaseError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from apps.common import multiproc
from apps.messaging.models import DeadLetter, Message, Status

from .health import breaker_states, run_checks


def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


BACKLOG_STATUSES = (Status.QUEUED, Status.PENDING, Status.SENT)
BACKLOG_CACHE_SECONDS = 1.0


def ready(request: HttpRequest) -> JsonResponse:
    checks = run_checks()
    # Open breakers are reported (status "degraded") but do not make this a 503: deliveries
    # through them wait and retry, and taking every web instance out of rotation because a
    # push provider is down would refuse the sends that are still fine to accept.
    breakers = breaker_states()
    failing = [name for name, result in checks.items() if result != "ok"]
    if failing:
        response = JsonResponse(
            {
                "status": "unavailable",
                "detail": f"failing: {', '.join(failing)}",
                "checks": checks,
                "breakers": breakers,
            },
            status=503,
        )
        response["Retry-After"] = "5"
        return response
    tripped = [name for name, state in breakers.items() if state not in ("closed", "unknown")]
    if tripped:
        return JsonResponse(
            {
                "status": "degraded",
                "detail": f"circuit open: {', '.join(tripped)}",
                "checks": checks,
                "breakers": breakers,
            }
        )
    return JsonResponse({"status": "ok", "checks": checks, "breakers": breakers})


class BacklogCollector(Collector):
    """Yield messaging_backlog{status} and messaging_dead_letters, counted at scrape time.

    The counts are the database's, the same from every host; each process keeps them for
    BACKLOG_CACHE_SECONDS so that scrapes in quick succession cost no query.
    """

    _cached: tuple[float, dict[str, int], int] | None = None

    def counts(self) -> tuple[dict[str, int], int]:
        now = time.monotonic()
        cached = BacklogCollector._cached
        if cached is not None and now - cached[0] < BACKLOG_CACHE_SECONDS:
            return cached[1], cached[2]
        by_status = dict(
            Message.objects.filter(status__in=BACKLOG_STATUSES)
            .order_by()
            .values_list("status")
            .annotate(n=Count("pk"))
        )
        dead_letters = DeadLetter.objects.count()
        BacklogCollector._cached = (now, by_status, dead_letters)
        return by_status, dead_letters

    def collect(self):
        by_status, dead_letters = self.counts()
        backlog = GaugeMetricFamily("messaging_backlog", "Undelivered messages by status", labels=["status"])
        for status in BACKLOG_STATUSES:
            backlog.add_metric([str(status)], by_status.get(status, 0))
        yield backlog
        yield GaugeMetricFamily("messaging_dead_letters", "Dead letters awaiting review", value=dead_letters)


def metrics(request: HttpRequest) -> HttpResponse:
    """Expose what every process of this host recorded, plus the backlog, in Prometheus text.

    The readiness checks run too (messaging_dependency_up), so a scrape sees a dependency go
    down even when nothing polls /health/ready, and every breaker's shared state is read
    (messaging_breaker_open); if the database is down, the backlog is left out rather than
    failing the scrape.
    """
    run_checks()
    breaker_states()
    registry = CollectorRegistry()
    directory = os.environ.get(multiproc.ENV)
    if directory:
        multiproc.dead_processes_mark(Path(directory))
        MultiProcessCollector(registry, path=directory)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    try:
        body += generate_latest(_backlog_registry)
    except DatabaseError:
        BacklogCollector._cached = None
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


_backlog_registry = CollectorRegistry()
_backlog_registry.register(BacklogCollector())


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Answer unknown paths in JSON, like the rest of the API."""
    return JsonResponse({"detail": f"Not found: {request.path}"}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error."}, status=500)
