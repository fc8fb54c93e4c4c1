"""Health and metrics endpoints for operators and load balancers."""

from __future__ import annotations

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from apps.messaging.models import DeadLetter, Message, Status

from .health import breaker_states, run_checks


def live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


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


def metrics(request: HttpRequest) -> HttpResponse:
    """Expose backlog gauges read from the database at scrape time (Prometheus text format)."""
    registry = CollectorRegistry()
    by_status = Gauge("messaging_messages", "Undelivered messages by status", ["status"], registry=registry)
    counts = dict(
        Message.objects.filter(status__in=[Status.QUEUED, Status.PENDING, Status.SENT])
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
    )
    for status in (Status.QUEUED, Status.PENDING, Status.SENT):
        by_status.labels(status=status).set(counts.get(status, 0))
    Gauge("messaging_dead_letters", "Dead letters awaiting review", registry=registry).set(
        DeadLetter.objects.count()
    )
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Answer unknown paths in JSON, like the rest of the API."""
    return JsonResponse({"detail": f"Not found: {request.path}"}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error."}, status=500)
