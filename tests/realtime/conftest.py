"""Helpers for the mobile WebSocket tests: the real ASGI application and channel layer.

The tests drive `channels.testing.WebsocketCommunicator` against
`messaging_project.asgi.application` (origin validation + token auth + routing), with the
channels-redis layer on the test Redis database. pytest-asyncio is not a dependency: an
`async def` test is wrapped by `async_test`, which runs it with asgiref's `async_to_sync`.
That keeps the test's own thread free to serve the consumer's `database_sync_to_async`
calls, so everything the consumer commits is visible to the test (transactional tests).
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from apps.accounts.services import token_create
from messaging_project.asgi import application

MOBILE_PATH = "/ws/mobile/"
# Generous: the first database connection of a test can be slow on a loaded 2-core machine.
TIMEOUT = 5
# How long "nothing else arrives" is watched; long enough for a frame already on its way.
QUIET = 0.3
# A refused socket has no cleanup to wait for; a short wait keeps a refusal test from idling.
REFUSED_CLOSE_TIMEOUT = 0.5


def async_test(fn: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """Turn an `async def` test into a synchronous one that pytest can run with fixtures."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return async_to_sync(fn)(*args, **kwargs)

    return wrapper


def db(fn: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    """Return `fn` as a coroutine function running in the database thread."""
    return database_sync_to_async(fn)


def auth_headers(token: str | None = None, *, origin: str | None = None) -> list[tuple[bytes, bytes]]:
    """Build the handshake headers a client would send."""
    headers = []
    if token is not None:
        headers.append((b"authorization", f"Token {token}".encode()))
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return headers


def communicator(
    token: str | None = None, *, path: str = MOBILE_PATH, origin: str | None = None
) -> WebsocketCommunicator:
    """Return a not yet connected communicator for the real ASGI application."""
    return WebsocketCommunicator(application, path, headers=auth_headers(token, origin=origin))


@asynccontextmanager
async def mobile_socket(token: str | None = None, **kwargs) -> AsyncIterator[WebsocketCommunicator]:
    """Connect an authenticated socket, yield it, and close it (as the client would)."""
    ws = communicator(token, **kwargs)
    connected, _ = await ws.connect(timeout=TIMEOUT)
    assert connected
    try:
        yield ws
    finally:
        await ws.disconnect(timeout=TIMEOUT)


async def receive(ws: WebsocketCommunicator) -> dict:
    """Return the next JSON frame written to `ws`.

    The timeout is ours, not the communicator's: its own cancels the application on expiry,
    which can hang in the application's cleanup instead of failing the test.
    """
    async with asyncio.timeout(TIMEOUT):
        return await ws.receive_json_from(timeout=None)


async def receive_messages(ws: WebsocketCommunicator, count: int) -> list[dict]:
    """Return the M objects of the next `count` frames, asserting each is a `message` frame."""
    payloads = []
    for _ in range(count):
        frame = await receive(ws)
        assert frame["type"] == "message", frame
        payloads.append(frame["message"])
    return payloads


async def send_frame(ws: WebsocketCommunicator, frame: object) -> None:
    await ws.send_to(text_data=json.dumps(frame))


async def round_trip(ws: WebsocketCommunicator) -> None:
    """Ping and wait for the pong: every frame sent before it has then been handled."""
    await send_frame(ws, {"type": "ping"})
    assert await receive(ws) == {"type": "pong"}


async def assert_closed_unauthenticated(ws: WebsocketCommunicator) -> None:
    """Assert the handshake is accepted and then closed with 4401 (SPEC: bad token/ticket)."""
    connected, _ = await ws.connect(timeout=TIMEOUT)
    assert connected
    closing = await ws.receive_output(timeout=TIMEOUT)
    assert closing == {"type": "websocket.close", "code": 4401}
    await ws.disconnect(timeout=REFUSED_CLOSE_TIMEOUT)


@pytest.fixture
def mobile_token(mobile_user) -> str:
    return token_create(owner=mobile_user)


@pytest.fixture
def stranger_token(stranger) -> str:
    return token_create(owner=stranger)
