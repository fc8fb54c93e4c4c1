"""Browser pages for operators and developers: the ops dashboard and the client simulator.

The dashboard uses the Django admin's login (sessions): anonymous visitors are sent to the
admin login page and back, logged-in users who are not staff get 403. The simulator is a
static page that talks to the public API and `/ws/mobile/` with a pasted mobile token, exactly
as a mobile app would; it exists only where SIMULATOR_ENABLED is set (local runs).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import dashboard


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Let active staff through; send anonymous users to the admin login, refuse others with 403.

    (Django's `staff_member_required` sends logged-in non-staff to the login page too, which
    loops for someone who is logged in but not allowed.)
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path(), reverse("admin:login"))
        if not (user.is_active and user.is_staff):
            if request.path.endswith(".json"):
                return JsonResponse({"detail": "Staff only."}, status=403)
            return HttpResponse(
                "403 Forbidden: the ops dashboard is for staff.", status=403, content_type="text/plain"
            )
        return view(request, *args, **kwargs)

    return wrapped


@require_GET
@never_cache
@staff_required
def ops_dashboard(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "ops/dashboard.html",
        {
            "interval_ms": int(dashboard.interval_seconds() * 1000),
            "history_seconds": dashboard.HISTORY_SECONDS,
        },
    )


@require_GET
@never_cache
@staff_required
def ops_stats(request: HttpRequest) -> JsonResponse:
    """Return the dashboard's figures (apps/ops/dashboard.py: one computation per interval)."""
    return JsonResponse(dashboard.stats_current())


@require_GET
def simulator(request: HttpRequest) -> HttpResponse:
    if not settings.SIMULATOR_ENABLED:
        raise Http404("The client simulator is disabled (SIMULATOR_ENABLED).")
    return render(request, "ops/simulator.html")
