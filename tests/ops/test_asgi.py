"""The ASGI application's HTTP side: Django in one thread hop per request, answers unchanged."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading

import django
import pytest
from asgiref.sync import SyncToAsync, async_to_sync

from apps.accounts.services import token_create
from apps.messaging import apis
from apps.messaging.models import Message
from apps.ops.middleware import CorrelationIdMiddleware
from messaging_project import http
from messaging_project.asgi import application

# request_started, the middleware chain with the view and request_finished, all in one.
HOPS_PER_REQUEST = 1


async def _call(method: str, path: str, *, token: str | None = None, body: dict | None = None):
    raw = json.dumps(body).encode() if body is not None else b""
    headers = [
        (b"host", b"testserver"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(raw)).encode()),
    ]
    if token:
        headers.append((b"authorization", f"Token {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    incoming = [{"type": "http.request", "body": raw, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if incoming:
            return incoming.pop(0)
        # The client stays connected: Django cancels this wait once it has answered.
        await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    await application(scope, receive, send)
    body_bytes = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], dict(sent[0]["headers"]), json.loads(body_bytes) if body_bytes else None


@pytest.fixture
def sender_token(sender) -> str:
    return token_create(owner=sender)


@pytest.fixture
def hops(monkeypatch) -> list[str]:
    """Record every sync_to_async call (a thread hop) by the function it runs."""
    calls: list[str] = []
    real = SyncToAsync.__call__

    async def counting(self, *args, **kwargs):
        calls.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(SyncToAsync, "__call__", counting)
    return calls


@pytest.mark.django_db(transaction=True)
def test_a_send_through_the_asgi_app_is_stored_and_costs_one_thread_hop(
    sender, sender_token, mobile_user, hops
):
    status, headers, body = async_to_sync(_call)(
        "POST",
        "/api/v1/messages/",
        token=sender_token,
        body={"recipient_phone_number": mobile_user.phone_number, "content": "hi"},
    )

    assert status == 202, body
    assert [str(pk) for pk in Message.objects.values_list("pk", flat=True)] == [body["id"]]
    assert b"X-Correlation-ID" in headers
    assert len(hops) == HOPS_PER_REQUEST, hops


@pytest.mark.django_db(transaction=True)
def test_middleware_and_view_run_in_the_same_thread(sender, sender_token, mobile_user, monkeypatch):
    threads: dict[str, int] = {}
    real_middleware = CorrelationIdMiddleware.__call__

    def middleware(self, request):
        threads["middleware"] = threading.get_ident()
        return real_middleware(self, request)

    real_post = apis.MessageSendApi.post

    def post(self, request):
        threads["view"] = threading.get_ident()
        return real_post(self, request)

    monkeypatch.setattr(CorrelationIdMiddleware, "__call__", middleware)
    monkeypatch.setattr(apis.MessageSendApi, "post", post)

    status, _, _ = async_to_sync(_call)(
        "POST",
        "/api/v1/messages/",
        token=sender_token,
        body={"recipient_phone_number": mobile_user.phone_number, "content": "hi"},
    )

    assert status == 202
    assert threads["middleware"] == threads["view"]


@pytest.mark.django_db(transaction=True)
def test_errors_keep_their_status_and_json_detail(sender_token):
    status, _, body = async_to_sync(_call)("GET", "/api/v1/no-such-endpoint/", token=sender_token)
    assert status == 404
    assert "detail" in body

    status, _, body = async_to_sync(_call)("POST", "/api/v1/messages/", token=sender_token, body={})
    assert status == 400
    assert "recipient_phone_number" in body


def test_the_replaced_django_internals_are_those_of_the_installed_version():
    # OneHopASGIHandler.handle replaces ASGIHandler.handle: re-read Django's before widening
    # DJANGO_TESTED to a new version.
    assert http.django_is_tested(), f"written for Django {http.DJANGO_TESTED}, not {django.get_version()}"


@pytest.mark.django_db(transaction=True)
def test_a_saturated_process_answers_503_with_retry_after_and_stores_nothing(
    sender_token, mobile_user, monkeypatch
):
    handler = application.application_mapping["http"]
    monkeypatch.setattr(handler, "in_flight", handler.max_in_flight)

    status, headers, body = async_to_sync(_call)(
        "POST",
        "/api/v1/messages/",
        token=sender_token,
        body={"recipient_phone_number": mobile_user.phone_number, "content": "hi"},
    )

    assert status == 503
    assert headers[b"Retry-After"] == b"1"
    assert "capacity" in body["detail"]
    assert not Message.objects.exists()
    # Health checks still answer, so the load balancer sees a live process.
    status, _, _ = async_to_sync(_call)("GET", "/health/live")
    assert status == 200


@pytest.mark.django_db(transaction=True)
def test_requests_in_flight_are_counted_down_after_errors_too(sender_token):
    handler = application.application_mapping["http"]
    async_to_sync(_call)("POST", "/api/v1/messages/", token=sender_token, body={})
    async_to_sync(_call)("GET", "/api/v1/no-such-endpoint/", token=sender_token)
    assert handler.in_flight == 0


def test_the_web_and_celery_processes_freeze_their_startup_objects():
    """What a process loads at start stays out of full collections (a 100-200 ms pause each)."""
    code = (
        "import gc, messaging_project.asgi, messaging_project.celery as c;"
        "frozen = gc.get_freeze_count();"
        "gc.unfreeze(); c._freeze_startup_objects();"
        "print(frozen, gc.get_freeze_count())"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "messaging_project.settings.test"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)

    web, worker = (int(n) for n in out.stdout.split())
    assert web > 50_000 and worker > 50_000, out.stderr[-2000:]
