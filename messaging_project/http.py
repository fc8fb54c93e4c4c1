"""Django's ASGI handler, served in one thread hop per request and with a bound on waiting work.

Every view here is synchronous (DRF), and so are most middlewares (WhiteNoise has no async
mode). Django's own handler makes each request cost three thread hops (request_started, the
chain, closing the response), each on a thread created for that request alone
(`ThreadSensitiveContext`), plus a task listening for a disconnect that a synchronous view could
not act on anyway. Here the middleware chain runs in sync mode and the whole request, from
`request_started` to `request_finished`, is one call on a long-lived thread of a pool sized for
the database pool.

Overload: a process that already holds WEB_MAX_IN_FLIGHT requests answers the next one at once
with 503 and `Retry-After`, before reading anything from the database. Requests never queue for
seconds behind a saturated process; nothing accepted is affected (a refused request stored
nothing).

This overrides `ASGIHandler.handle`, an internal method: `DJANGO_TESTED` names the versions it
was written against, and tests/ops/test_asgi.py fails when the installed Django differs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import close_old_connections
from django.http import HttpResponse
from django.urls import set_script_prefix

# The Django versions whose ASGIHandler.handle this replaces (checked by a test).
DJANGO_TESTED = ("5.2",)
# Paths a load balancer or Prometheus asks even when the process is saturated.
UNLIMITED_PREFIXES = ("/health/", "/metrics")
OVERLOAD_RETRY_AFTER_SECONDS = 1
# A synchronous streaming body is sent in pieces of about this size, each read in the pool.
STREAM_BATCH_BYTES = 64 * 1024


def overloaded_response() -> HttpResponse:
    """Return the 503 a saturated process answers with."""
    body = json.dumps({"detail": "This server is at capacity; retry shortly."})
    response = HttpResponse(body, status=503, content_type="application/json")
    response["Retry-After"] = str(OVERLOAD_RETRY_AFTER_SECONDS)
    return response


class OneHopASGIHandler(ASGIHandler):
    """Serve each HTTP request in one hop to a pooled thread; refuse past WEB_MAX_IN_FLIGHT."""

    def __init__(self) -> None:
        super().__init__()
        self.max_in_flight = settings.WEB_MAX_IN_FLIGHT
        self.in_flight = 0
        self.refused = 0
        self._executor = ThreadPoolExecutor(max_workers=settings.WEB_THREADS, thread_name_prefix="http")
        self._respond_in_thread = sync_to_async(
            self._respond, thread_sensitive=False, executor=self._executor
        )

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        await self.handle(scope, receive, send)

    async def handle(self, scope, receive, send) -> None:
        limited = not scope["path"].startswith(UNLIMITED_PREFIXES)
        if limited and self.in_flight >= self.max_in_flight:
            self.refused += 1
            await self.send_response(overloaded_response(), send)
            return
        self.in_flight += limited
        try:
            try:
                body_file = await self.read_body(receive)
            except RequestAborted:
                return
            try:
                response = await self._respond_in_thread(scope, body_file)
                if response.streaming and not response.is_async:
                    response.streaming_content = self._pulled_in_pool(iter(response.streaming_content))
                await self.send_response(response, send)
                if response.streaming:
                    await sync_to_async(response.close, thread_sensitive=False, executor=self._executor)()
            finally:
                body_file.close()
        finally:
            self.in_flight -= limited

    def _pulled_in_pool(self, chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
        """Read a synchronous streaming body in the pool, STREAM_BATCH_BYTES at a time.

        Django would otherwise consume the whole iterator into a list before sending a byte
        (StreamingHttpResponse.__aiter__), so a large export would sit in memory at once.
        """
        pull = sync_to_async(_next_batch, thread_sensitive=False, executor=self._executor)

        async def batches() -> AsyncIterator[bytes]:
            while batch := await pull(chunks):
                yield batch

        return batches()

    def _respond(self, scope: dict, body_file) -> HttpResponse:
        """Run one request from request_started to request_finished (in a pool thread)."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
        if not response.streaming:
            # The body is in memory: closing now (request_finished: connections back to the
            # pool) saves the thread hop Django spends on it after sending.
            response.close()
        return response


def _next_batch(chunks: Iterator[bytes]) -> bytes:
    """Return the next chunks of `chunks` joined, up to about STREAM_BATCH_BYTES (b"" at the end).

    The generator may use the database: this thread's connection goes back to the pool
    before the thread serves anything else.
    """
    batch: list[bytes] = []
    size = 0
    try:
        for chunk in chunks:
            batch.append(chunk)
            size += len(chunk)
            if size >= STREAM_BATCH_BYTES:
                break
    finally:
        close_old_connections()
    return b"".join(batch)


def django_is_tested() -> bool:
    """Return whether the installed Django is one this handler was written against."""
    return any(django.get_version().startswith(v) for v in DJANGO_TESTED)
