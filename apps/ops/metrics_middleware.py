"""Count and time every HTTP request by view and status (messaging_http_* in apps/common/metrics.py)."""

from __future__ import annotations

import time

from apps.common import metrics

# Requests no URL pattern matched (404s of scanners and typos) share one label value, so that
# raw paths never become label values.
UNMATCHED = "<unmatched>"


def view_label(request) -> str:
    """Return the matched URL pattern's name (namespaced), else the view's dotted path."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    return match.view_name or match._func_path


class RequestMetricsMiddleware:
    """Sync only: the ASGI handler runs the whole chain in one thread (messaging_project/asgi.py)."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        metrics.http_request(
            view=view_label(request),
            method=request.method,
            status=response.status_code,
            seconds=time.perf_counter() - started,
        )
        return response
