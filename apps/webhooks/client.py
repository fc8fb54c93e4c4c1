"""The HTTP client of webhook delivery: one per process, keep-alive, no redirects, guarded connects.

Every new connection resolves the host once, checks every answer (addresses.connect_address)
and connects to the checked address; TLS still verifies the certificate for, and sends SNI
of, the URL's host, and the pool stays keyed by that host. A kept-alive connection is to an
address checked when it was opened.

WEBHOOK_TIMEOUT_SECONDS bounds a whole attempt, not each socket operation: a 2xx counts only
within it (SPEC.md section 8), so a receiver that answers a byte at a time cannot hold a worker
slot (and its endpoint's lane, whose lease assumes an attempt ends within the timeout) longer.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import httpcore
import httpx
from django.conf import settings

from . import addresses

# `_client_new` replaces the private connection pool of httpx's transport (httpx gives no public
# way to pass httpcore a network backend): re-read HTTPTransport.__init__ before widening these.
HTTPX_TESTED = ("0.28.",)
HTTPCORE_TESTED = ("1.0.",)

# At most this much of a receiver's answer is read (only its status matters).
MAX_BODY_READ = 64 * 1024


# The monotonic time by which this thread's current attempt must be over (None: no attempt).
_attempt = threading.local()


def _within_deadline(timeout: float | None, expired: type[Exception]) -> float | None:
    """Return `timeout` shortened to what is left of the current attempt; raise `expired` if nothing is."""
    deadline = getattr(_attempt, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the attempt's time is up")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the attempt's deadline."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _within_deadline(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _within_deadline(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> httpcore.NetworkStream:
        timeout = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _GuardedBackend(httpcore.SyncBackend):
    def connect_tcp(self, host: str, port: int, timeout=None, local_address=None, socket_options=None):
        address = addresses.connect_address(host, port)
        timeout = _within_deadline(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(super().connect_tcp(address, port, timeout, local_address, socket_options))


def _client_new() -> httpx.Client:
    transport = httpx.HTTPTransport()
    # httpx builds its pool without a network backend; this one checks the address of each connect.
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        max_connections=100,
        max_keepalive_connections=20,
        keepalive_expiry=30,
        network_backend=_GuardedBackend(),
    )
    return httpx.Client(
        transport=transport,
        timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
        follow_redirects=False,
        # Never through a proxy of the environment: the guard must see the receiver's address.
        trust_env=False,
        headers={"User-Agent": "messaging-webhooks/1"},
    )


_clients: dict[int, httpx.Client] = {}


def client() -> httpx.Client:
    """Return this process's client (a Celery pool child makes its own after the fork)."""
    pid = os.getpid()
    found = _clients.get(pid)
    if found is None:
        found = _clients[pid] = _client_new()
    return found


def client_reset() -> None:
    """Close and forget this process's client (settings changed, tests)."""
    found = _clients.pop(os.getpid(), None)
    if found is not None:
        found.close()


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    error: str
    seconds: float
    # Nothing answered (refused address, connect error, timeout): the receiver is unreachable.
    unreachable: bool

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, *, body: bytes, headers: dict[str, str]) -> Answer:
    """POST `body` to `url`; return what happened (never raises for the receiver's faults)."""
    started = time.monotonic()

    def answer(status_code: int | None, error: str, unreachable: bool = False) -> Answer:
        return Answer(status_code, error[:500], time.monotonic() - started, unreachable)

    status_code: int | None = None
    _attempt.deadline = started + settings.WEBHOOK_TIMEOUT_SECONDS
    try:
        addresses.scheme_check(url)
        with client().stream(
            "POST", url, content=body, headers={**headers, "Content-Type": "application/json"}
        ) as response:
            status_code = response.status_code
            read = 0
            for chunk in response.iter_raw():
                read += len(chunk)
                if read >= MAX_BODY_READ:
                    break
    except addresses.AddressRefused as exc:
        return answer(None, f"refused: {exc}", unreachable=True)
    except httpx.HTTPError as exc:
        # After the status line, only the (unread) rest of the answer failed: the status is the
        # answer, and the connection is dropped rather than kept.
        if status_code is None:
            if isinstance(exc, httpx.TimeoutException):
                return answer(
                    None, f"timed out after {settings.WEBHOOK_TIMEOUT_SECONDS:g} s", unreachable=True
                )
            return answer(None, f"{type(exc).__name__}: {exc}", unreachable=True)
    finally:
        _attempt.deadline = None
    if 200 <= status_code < 300:
        return answer(status_code, "")
    if 300 <= status_code < 400:
        return answer(status_code, "redirects are not followed")
    return answer(status_code, f"HTTP {status_code}")
