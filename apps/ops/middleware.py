"""Take the caller's X-Correlation-ID (or make one) for the request and echo it back."""

from __future__ import annotations

import re

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from apps.common.logging import correlation_context

HEADER = "HTTP_X_CORRELATION_ID"
_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CorrelationIdMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    @staticmethod
    def _incoming(request) -> str:
        value = request.META.get(HEADER, "")
        return value if _VALID.match(value) else ""

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        with correlation_context(self._incoming(request)) as cid:
            response = self.get_response(request)
        response["X-Correlation-ID"] = cid
        return response

    async def __acall__(self, request):
        with correlation_context(self._incoming(request)) as cid:
            response = await self.get_response(request)
        response["X-Correlation-ID"] = cid
        return response
