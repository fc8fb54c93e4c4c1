"""Make the request's user the actor of audit records its code makes (admin permission edits)."""

from __future__ import annotations

from .services import acting_request


class AuditActorMiddleware:
    """After AuthenticationMiddleware: `request.user` is read only when something is recorded."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with acting_request(request):
            return self.get_response(request)
