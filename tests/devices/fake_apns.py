"""A local APNS-compatible server: HTTP/2 over TLS (certificate from the test CA), checking
the provider JWT (ES256, key id and team id) and answering `POST /3/device/<token>` with a
reply scripted per device token (200 by default), as Apple does: `apns-id` echoed, errors as
`{"reason": ...}`."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded

from tests.devices.scripted import ScriptedReplies


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str = ""
    retry_after: str = ""


@dataclass(frozen=True)
class Received:
    token: str
    headers: dict[str, str]
    payload: dict
    at: float


class FakeApns(ScriptedReplies[Reply]):
    def __init__(
        self, *, cert_file: Path, key_file: Path, auth_public_pem: bytes, team_id: str, key_id: str
    ) -> None:
        super().__init__()
        self.auth_public_pem = auth_public_pem
        self.team_id = team_id
        self.key_id = key_id
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert_file, key_file)
        self._context.set_alpn_protocols(["h2"])
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeApns:
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                self._loop.create_server(lambda: _Stream(self), "127.0.0.1", 0, ssl=self._context)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        threading.Thread(target=run, name="fake-apns", daemon=True).start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)

    def reply_for(self, headers: dict[str, str], body: bytes) -> tuple[Reply, str]:
        """Check the request like APNS does and return the reply and the device token."""
        token = headers.get(":path", "").removeprefix("/3/device/")
        bearer = headers.get("authorization", "").removeprefix("bearer ")
        try:
            claims = jwt.decode(bearer, self.auth_public_pem, algorithms=["ES256"])
            if (
                claims.get("iss") != self.team_id
                or jwt.get_unverified_header(bearer).get("kid") != self.key_id
            ):
                raise jwt.InvalidTokenError("wrong team or key")
        except jwt.InvalidTokenError:
            return Reply(403, "InvalidProviderToken"), token
        with self._lock:
            self.received.append(Received(token, dict(headers), json.loads(body), time.time()))
        return self._next_reply(token) or Reply(200), token


class _Stream(asyncio.Protocol):
    def __init__(self, server: FakeApns) -> None:
        self.server = server
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, RequestReceived):
                self.requests[event.stream_id] = (dict(event.headers), bytearray())
            elif isinstance(event, DataReceived):
                self.requests[event.stream_id][1].extend(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                self._respond(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self.transport.close()
        self.transport.write(self.conn.data_to_send())

    def _respond(self, stream_id: int) -> None:
        headers, body = self.requests.pop(stream_id)
        reply, _ = self.server.reply_for(headers, bytes(body))
        apns_id = headers.get("apns-id") or str(uuid.uuid4())
        response = [(":status", str(reply.status)), ("apns-id", apns_id)]
        if reply.status == 200:
            self.conn.send_headers(stream_id, response, end_stream=True)
            return
        if reply.retry_after:
            response.append(("retry-after", reply.retry_after))
        response.append(("content-type", "application/json"))
        self.conn.send_headers(stream_id, response)
        self.conn.send_data(stream_id, json.dumps({"reason": reply.reason}).encode(), end_stream=True)
