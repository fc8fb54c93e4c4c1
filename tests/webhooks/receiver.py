"""A real HTTP receiver for webhook tests: a threaded http.server on 127.0.0.1.

It records every request (headers and body) and answers with the status its `script` gives
(200 by default); it can be stopped (connections refused) and started again on the same port,
made to hold requests (a slow receiver), or to dribble its answer a byte at a time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)  # wall clock of arrival
    peer: tuple[str, int] | None = None  # the client's address and port (one per connection)

    @property
    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    def __init__(self, port: int = 0) -> None:
        self.requests: list[Received] = []
        self.answered: list[tuple[str, int]] = []  # (webhook-id, status) of each answer sent
        # Called with the request number (0-based) and the request; returns the status to answer.
        self.script: Callable[[int, Received], int] = lambda n, request: 200
        self.hold = threading.Event()  # while set, requests wait (up to 30 s) before answering
        # When > 0, each answer is written one byte at a time over this many seconds.
        self.dribble_seconds = 0.0
        self._changed = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # Headers and body leave in two writes: without this, Nagle's algorithm holds
                # the body for the client's delayed ACK (40 ms per request).
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                request = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                    peer=self.client_address[:2],
                )
                with receiver._changed:
                    number = len(receiver.requests)
                    receiver.requests.append(request)
                    receiver._changed.notify_all()
                deadline = time.monotonic() + 30
                while receiver.hold.is_set() and time.monotonic() < deadline:
                    time.sleep(0.01)
                status = receiver.script(number, request)
                if receiver.dribble_seconds > 0:
                    if not self._dribble(status, receiver.dribble_seconds):
                        return  # the client gave up waiting: it got no answer
                else:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                with receiver._changed:
                    receiver.answered.append((request.headers.get("webhook-id", ""), status))
                    receiver._changed.notify_all()

            def _dribble(self, status: int, seconds: float) -> bool:
                answer = f"HTTP/1.1 {status} OK\r\nContent-Length: 2\r\nX-Slow: {'.' * 40}\r\n\r\nok".encode()
                try:
                    for i in range(len(answer)):
                        self.wfile.write(answer[i : i + 1])
                        self.wfile.flush()
                        time.sleep(seconds / len(answer))
                except OSError:
                    self.close_connection = True
                    return False
                return True

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening: connections to the port are refused until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, predicate: Callable[[Receiver], object], *, timeout: float, what: str) -> object:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate(self)
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out after {timeout:g} s waiting for {what}; got {self.requests!r}"
                    )
                self._changed.wait(min(remaining, 0.2))

    def successful_ids(self) -> list[str]:
        with self._changed:
            return [webhook_id for webhook_id, status in self.answered if 200 <= status < 300]
