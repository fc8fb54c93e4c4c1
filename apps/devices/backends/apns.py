"""iOS pushes through aioapns (token-based auth, HTTP/2 over TLS).

aioapns is asyncio-only and keeps HTTP/2 connections open, so each process keeps one event
loop in a daemon thread (as apps/common/bridge.py does for the channel layer) with one APNs
client living on it; synchronous callers submit sends to that loop and wait with a timeout.
The client connects to APNS_ENDPOINT (host:port; Apple's host by default) and trusts
APNS_CA_FILE when set, the system CAs otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from pathlib import Path

from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import APNS_RESPONSE_CODE
from aioapns.connection import APNsProductionClientProtocol, APNsTLSClientProtocol
from aioapns.exceptions import ConnectionError as ApnsConnectionError
from aioapns.exceptions import MaxAttemptsExceeded
from django.conf import settings

from . import Notification, Result, Target, Verdict

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None
_client: APNs | None = None
_client_key: tuple | None = None

# Reasons (HTTP 400/410) that mean the token will never work for our app.
INVALID_TOKEN_REASONS = {"BadDeviceToken", "Unregistered", "DeviceTokenNotForTopic"}
# Reasons that mean our key, team or topic are wrong: an operator must act, tokens are fine.
CONFIGURATION_REASONS = {
    "InvalidProviderToken",
    "ExpiredProviderToken",
    "MissingProviderToken",
    "BadCertificate",
    "BadCertificateEnvironment",
    "TopicDisallowed",
    "MissingTopic",
    "BadTopic",
}
TRANSIENT_STATUSES = {
    APNS_RESPONSE_CODE.TOO_MANY_REQUESTS,
    APNS_RESPONSE_CODE.INTERNAL_SERVER_ERROR,
    APNS_RESPONSE_CODE.SERVICE_UNAVAILABLE,
}


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop, _pid, _client, _client_key
    with _lock:
        if _loop is None or _pid != os.getpid():  # a forked worker needs its own loop
            _loop = asyncio.new_event_loop()
            _pid = os.getpid()
            _client = _client_key = None
            threading.Thread(target=_loop.run_forever, name="apns", daemon=True).start()
        return _loop


def _ssl_context() -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.APNS_CA_FILE or None)
    context.set_alpn_protocols(["h2"])
    return context


def _protocol_class() -> type[APNsTLSClientProtocol]:
    """Return aioapns' TLS protocol aimed at APNS_ENDPOINT (its host and port are class constants)."""
    default = "api.development.push.apple.com" if settings.APNS_USE_SANDBOX else "api.push.apple.com"
    host, _, port = (settings.APNS_ENDPOINT or f"{default}:443").rpartition(":")
    return type(
        "EndpointProtocol",
        (APNsProductionClientProtocol,),
        {"APNS_SERVER": host, "APNS_PORT": int(port)},
    )


async def _apns_client() -> APNs:
    """Return the loop's APNs client for the current settings; build it on the loop itself."""
    global _client, _client_key
    key = (
        settings.APNS_KEY_FILE,
        settings.APNS_KEY_ID,
        settings.APNS_TEAM_ID,
        settings.APNS_TOPIC,
        settings.APNS_ENDPOINT,
        settings.APNS_CA_FILE,
        settings.APNS_USE_SANDBOX,
    )
    if _client is not None and _client_key == key:
        return _client
    if _client is not None:
        _client.pool.close()
    client = APNs(
        key=Path(settings.APNS_KEY_FILE).read_text(),
        key_id=settings.APNS_KEY_ID,
        team_id=settings.APNS_TEAM_ID,
        topic=settings.APNS_TOPIC,
        use_sandbox=settings.APNS_USE_SANDBOX,
        ssl_context=_ssl_context(),
        max_connection_attempts=2,
        err_func=_answered,
    )
    client.pool.protocol_class = _protocol_class()
    _client, _client_key = client, key
    return client


async def _answered(request: NotificationRequest, result: object) -> None:
    """Stay quiet: aioapns would log every refusal as an error; services.push_send logs them."""


def _payload(notification: Notification) -> dict:
    return {
        "aps": {"alert": {"title": notification.title, "body": notification.body}, "sound": "default"},
        **notification.data,
    }


def classify(status: str, reason: str) -> Verdict:
    """Return what an APNS answer (HTTP status and reason) means for the token."""
    if status == APNS_RESPONSE_CODE.SUCCESS:
        return Verdict.SENT
    if status == APNS_RESPONSE_CODE.GONE or reason in INVALID_TOKEN_REASONS:
        return Verdict.INVALID_TOKEN
    if status in TRANSIENT_STATUSES:
        return Verdict.TRANSIENT
    if status == APNS_RESPONSE_CODE.FORBIDDEN or reason in CONFIGURATION_REASONS:
        return Verdict.CONFIGURATION
    return Verdict.REJECTED  # e.g. 413 PayloadTooLarge: this notification, not the token


async def _send_one(client: APNs, notification: Notification, target: Target) -> Result:
    request = NotificationRequest(
        device_token=target.token,
        message=_payload(notification),
        priority=10 if notification.high_priority else 5,
        collapse_key=notification.collapse_key or None,
        push_type=PushType.ALERT,
    )
    try:
        answer = await asyncio.wait_for(
            client.send_notification(request), timeout=settings.PUSH_SEND_TIMEOUT_SECONDS
        )
    except (TimeoutError, ApnsConnectionError, MaxAttemptsExceeded, OSError) as exc:
        return Result(target.device_id, Verdict.TRANSIENT, f"apns unreachable: {exc!r}"[:500])
    verdict = classify(answer.status, answer.description or "")
    error = "" if verdict == Verdict.SENT else f"apns {answer.status} {answer.description or ''}".strip()
    return Result(target.device_id, verdict, error[:500])


async def _send_all(notification: Notification, targets: list[Target]) -> list[Result]:
    try:
        client = await _apns_client()
    except (OSError, ValueError, ssl.SSLError) as exc:
        return [Result(t.device_id, Verdict.CONFIGURATION, f"apns credentials: {exc}"[:500]) for t in targets]
    return list(await asyncio.gather(*(_send_one(client, notification, t) for t in targets)))


def send(notification: Notification, targets: list[Target]) -> list[Result]:
    """Send `notification` to each iOS token, concurrently, each with a timeout."""
    future = asyncio.run_coroutine_threadsafe(_send_all(notification, targets), _event_loop())
    # Every send has its own timeout; this outer one only guards against a wedged loop.
    return future.result(timeout=settings.PUSH_SEND_TIMEOUT_SECONDS * 2 + 5)
