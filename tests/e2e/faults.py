"""What the fault-injection tests share: a reconnecting app, a steady sender, and the figures.

`App` is a mobile app as the product expects one: one socket at a time, reconnecting (every
0.2 s) whenever it drops, acknowledging every `message` frame as it arrives and pinging as a
heartbeat. It records every frame with its arrival time and connection, so a test can tell a
redelivery of an unacknowledged frame (allowed: the app deduplicates by id) from a frame that
arrives after the server had recorded the ack (forbidden: that is a duplicate to the app).

`Sender` posts one-way messages from a thread at a steady pace, tolerating refusals (connection
refused while the web process is down, 503): only a 202 counts as accepted, with its time.

`figures` reads the accepted messages back from PostgreSQL and returns what each fault prints:
`FAULT <name>: sent=N lost=N duplicated_to_app=N ...`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from websockets.exceptions import InvalidHandshake, InvalidMessage

from apps.messaging.models import Message, Status

from .harness import Api, MobileSocket, Stack

RECONNECT_INTERVAL = 0.2
PING_INTERVAL = 2.0
DELIVERED = (Status.DELIVERED, Status.READ)


@dataclass(frozen=True)
class Arrival:
    connection: int
    message_id: str
    seq: int
    at: float


class Recorded:
    """What one app received over its `sockets` (connections, in the order they opened)."""

    def __init__(self, stack: Stack, sockets: Iterable[MobileSocket] = ()) -> None:
        self.stack = stack
        self.sockets: list[MobileSocket] = list(sockets)

    def arrivals(self) -> list[Arrival]:
        """Return every `message` frame received on every connection so far, in arrival order."""
        found = []
        for n, socket in enumerate(list(self.sockets)):
            with socket._changed:
                pairs = list(zip(socket.frames, socket.arrivals, strict=True))
            found += [
                Arrival(n, f["message"]["id"], f["message"]["seq"], at)
                for f, at in pairs
                if f.get("type") == "message"
            ]
        return sorted(found, key=lambda a: a.at)

    def message_ids(self) -> set[str]:
        return {a.message_id for a in self.arrivals()}

    def wait_for_all(self, ids: Iterable[str], *, timeout: float) -> None:
        wanted = set(ids)
        self.stack.wait(
            lambda: wanted <= self.message_ids(),
            timeout=timeout,
            what=f"the app to receive {len(wanted)} messages (missing {len(wanted - self.message_ids())})",
        )


class App(Recorded):
    """A mobile app that keeps one socket open (reconnecting) and acks everything it receives."""

    def __init__(self, stack: Stack, token: str, *, ws_url: str | None = None) -> None:
        super().__init__(stack)
        self.token = token
        self.ws_url = ws_url or stack.ws_url
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-app", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                socket = MobileSocket(self.ws_url, token=self.token)
            except (OSError, InvalidHandshake, InvalidMessage, TimeoutError):
                self._stop.wait(RECONNECT_INTERVAL)
                continue
            self.sockets.append(socket)
            socket.send({"type": "ping"})
            self._connected.set()
            while not self._stop.is_set() and socket.stays_open(PING_INTERVAL):
                socket.send({"type": "ping"})
            socket.close()
            self._connected.clear()
            if not self._stop.is_set():
                self._stop.wait(RECONNECT_INTERVAL)

    def wait_connected(self, timeout: float = 20) -> MobileSocket:
        """Wait for an open socket whose connect() is done (its pong arrived); return it."""
        self.stack.wait(self._connected.is_set, timeout=timeout, what="the app to connect")
        socket = self.sockets[-1]
        socket.wait_ready(timeout=timeout)
        return socket

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for socket in self.sockets:
            socket.close()


class Sender:
    """Post one-way messages to `phone` every `interval` seconds from a thread until stopped."""

    def __init__(self, api: Api, phone: str, *, interval: float = 0.05, label: str = "load") -> None:
        self.api = api
        self.phone = phone
        self.interval = interval
        self.label = label
        self.accepted: dict[str, float] = {}  # message id -> when the 202 arrived
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-sender", daemon=True)

    def start(self) -> Sender:
        self._thread.start()
        return self

    def send_one(self, n: int) -> str | None:
        body = {"recipient_phone_number": self.phone, "content": f"{self.label} #{n}"}
        try:
            response = self.api.post("/api/v1/messages/", body, timeout=5)
        except OSError:  # refused or reset: the web process is down
            self.refused += 1
            return None
        if response.status != 202:
            assert response.status == 503, (response.status, response.body)  # never a 500
            self.refused += 1
            return None
        self.accepted[response.body["id"]] = time.time()
        return response.body["id"]

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            if self.send_one(n) is None:
                self._stop.wait(0.2)
            n += 1
            self._stop.wait(self.interval)

    def stop(self) -> list[str]:
        """Stop sending; return the accepted ids in the order they were accepted."""
        self._stop.set()
        self._thread.join(timeout=15)
        return list(self.accepted)


def duplicates_to_app(arrivals: list[Arrival], delivered_at: dict[str, float]) -> int:
    """Count frames that arrived after the server had recorded their message's ack.

    A frame written again because its ack never reached the server (the socket or the web
    process died first, the ack timed out) is at-least-once redelivery, which SPEC.md allows;
    one that arrives once the message is `delivered` is what the app must never see.
    """
    first: set[str] = set()
    duplicates = 0
    for arrival in arrivals:
        if arrival.message_id not in first:
            first.add(arrival.message_id)
            continue
        acked_at = delivered_at.get(arrival.message_id)
        if acked_at is not None and arrival.at > acked_at:
            duplicates += 1
    return duplicates


def figures(name: str, ids: list[str], apps: list[Recorded], **other: object) -> dict[str, object]:
    """Print and return the fault's figure line for the accepted `ids` (statuses from PostgreSQL).

    `apps` are the recipients' apps (empty: judge by the statuses alone).
    """
    rows = {
        str(pk): (status, at)
        for pk, status, at in Message.objects.filter(pk__in=ids).values_list("pk", "status", "delivered_at")
    }
    delivered_at = {pk: at.timestamp() for pk, (_status, at) in rows.items() if at is not None}
    seen = set().union(*(app.message_ids() for app in apps)) if apps else set(ids)
    lost = sum(1 for pk in ids if rows.get(pk, ("missing",))[0] not in DELIVERED or pk not in seen)
    duplicated = redelivered = 0
    for app in apps:
        arrivals = app.arrivals()
        app_duplicates = duplicates_to_app(arrivals, delivered_at)
        duplicated += app_duplicates
        redelivered += len(arrivals) - len({a.message_id for a in arrivals}) - app_duplicates
    result: dict[str, object] = {
        "sent": len(ids),
        "lost": lost,
        "duplicated_to_app": duplicated,
        "redelivered": redelivered,
        **other,
    }
    line = " ".join(f"{k}={v:.2f}s" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
    print(f"\nFAULT {name}: {line}")
    return result
