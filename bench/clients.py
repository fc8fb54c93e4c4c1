"""Many mobile WebSocket clients in one asyncio process, acking every message they receive.

The fleet runs in a child process (its CPU is not the load generator's) and is driven over a
pipe: `connect` opens the connections in waves, `frames` returns the receive times recorded
for a tag (the second word of a message's content, e.g. "p1" for "bench p1 17"), `stats` the
counters, `stop` closes everything. Times are wall-clock (`time.time()`), comparable with the
timestamps PostgreSQL stores for the same machine.

Acks: by default a client gathers the ids that arrive in one burst and acks them in one frame
as soon as its event loop is free (`coalesce`), which is what a careful app does and the
protocol allows (`message_ids` is a list); `each` sends one ack frame per message.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

MAX_IDS_PER_ACK = 1000
# The server counts a connection offline after 60 s without a heartbeat; ping well within.
PING_SECONDS = 25


def tag_of(content: str) -> str:
    parts = content.split(" ", 2)
    return parts[1] if len(parts) > 1 else ""


class Client:
    """One connection: records each message frame's arrival and acks it."""

    def __init__(self, fleet: Fleet, token: str, *, ack_mode: str) -> None:
        self.fleet = fleet
        self.token = token
        self.ack_mode = ack_mode
        self.ws: ClientConnection | None = None
        self._pending: list[str] = []
        self._flush_scheduled = False
        self._background: set[asyncio.Task] = set()

    async def open(self, url: str) -> None:
        self.ws = await connect(
            url,
            additional_headers={"Authorization": f"Token {self.token}"},
            open_timeout=60,
            close_timeout=2,
            ping_interval=None,  # the app-level ping below is what keeps presence alive
            max_size=None,
            proxy=None,
        )

    async def run(self) -> None:
        assert self.ws is not None
        pinger = asyncio.create_task(self._ping())
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame.get("type") == "message":
                    message = frame["message"]
                    self.fleet.record(message["id"], message.get("seq"), message.get("content", ""))
                    self._ack(message["id"])
        except ConnectionClosed:
            pass
        finally:
            pinger.cancel()
            if not self.fleet.stopping:
                rcvd = self.ws.protocol.close_rcvd
                self.fleet.closed_codes[rcvd.code if rcvd else 1006] += 1

    async def _ping(self) -> None:
        assert self.ws is not None
        await asyncio.sleep(random.uniform(1, PING_SECONDS))
        while True:
            await self._send({"type": "ping"})
            await asyncio.sleep(PING_SECONDS)

    def _ack(self, message_id: str) -> None:
        if self.ack_mode == "each":
            self._spawn(self._send({"type": "ack", "message_ids": [message_id]}))
            return
        self._pending.append(message_id)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        ids, self._pending = self._pending, []
        self._flush_scheduled = False
        for i in range(0, len(ids), MAX_IDS_PER_ACK):
            self._spawn(self._send({"type": "ack", "message_ids": ids[i : i + MAX_IDS_PER_ACK]}))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _send(self, frame: dict) -> None:
        assert self.ws is not None
        try:
            await self.ws.send(json.dumps(frame))
            self.fleet.acks_sent += frame["type"] == "ack"
        except ConnectionClosed:
            pass

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


@dataclass
class Fleet:
    url: str
    ack_mode: str = "coalesce"
    clients: list[Client] = field(default_factory=list)
    # tag -> message id -> first arrival (wall clock)
    arrivals: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    duplicates: int = 0
    frames: int = 0
    acks_sent: int = 0
    closed_codes: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    stopping: bool = False
    keep_seqs: bool = False
    seqs: list[int] = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)

    def record(self, message_id: str, seq: Any, content: str) -> None:
        now = time.time()
        self.frames += 1
        if self.keep_seqs and isinstance(seq, int):
            self.seqs.append(seq)
        bucket = self.arrivals[tag_of(content)]
        if message_id in bucket:
            self.duplicates += 1
        else:
            bucket[message_id] = now

    async def connect(self, tokens: list[str], *, wave: int = 50) -> dict:
        """Open one connection per token, `wave` at a time; return counts and the time taken."""
        started = time.monotonic()
        failed: list[str] = []
        for i in range(0, len(tokens), wave):
            group = [Client(self, token, ack_mode=self.ack_mode) for token in tokens[i : i + wave]]
            results = await asyncio.gather(*(c.open(self.url) for c in group), return_exceptions=True)
            for client, result in zip(group, results, strict=True):
                if isinstance(result, BaseException):
                    detail = (
                        f"HTTP {result.response.status_code}" if isinstance(result, InvalidStatus) else ""
                    )
                    failed.append(f"{type(result).__name__} {detail or result}"[:200])
                else:
                    self.clients.append(client)
                    self._tasks.append(asyncio.create_task(client.run()))
        return {
            "connected": len(self.clients),
            "failed": len(failed),
            "errors": sorted(set(failed))[:5],
            "seconds": time.monotonic() - started,
        }

    def stats(self) -> dict:
        return {
            "open": len(self.clients) - sum(self.closed_codes.values()),
            "frames": self.frames,
            "duplicates": self.duplicates,
            "acks_sent": self.acks_sent,
            "closed_codes": dict(self.closed_codes),
        }

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        for task in self._tasks:
            task.cancel()

    async def serve(self, conn: Connection) -> None:
        """Answer commands from the parent until `stop`."""
        loop = asyncio.get_running_loop()
        while True:
            command, args = await loop.run_in_executor(None, conn.recv)
            if command == "connect":
                conn.send(await self.connect(**args))
            elif command == "frames":
                conn.send(dict(self.arrivals.get(args["tag"], {})))
            elif command == "count":
                conn.send(len(self.arrivals.get(args["tag"], {})))
            elif command == "stats":
                conn.send(self.stats())
            elif command == "stop":
                await self.stop()
                conn.send(self.stats())
                return


def fleet_main(conn: Connection, url: str, ack_mode: str) -> None:
    """Entry point of the fleet's process."""
    asyncio.run(Fleet(url=url, ack_mode=ack_mode).serve(conn))


class FleetHandle:
    """The parent's side of the pipe to the fleet process."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def call(self, command: str, **args: Any) -> Any:
        self.conn.send((command, args))
        if not self.conn.poll(600):
            raise TimeoutError(f"the client fleet did not answer {command!r}")
        return self.conn.recv()


@dataclass
class CatchupResult:
    connect_seconds: float = 0.0
    first_frame_seconds: float | None = None
    all_frames_seconds: float | None = None
    all_acked_seconds: float | None = None
    frames: int = 0
    distinct: int = 0
    in_seq_order: bool = False
    arrivals: list[float] = field(default_factory=list)


async def catchup_run(
    url: str, token: str, *, expected: int, timeout: float, acked: Callable[[], int]
) -> CatchupResult:
    """Connect one client and time the arrival, then the recorded acks, of `expected` messages.

    Times are seconds from the start of the connection attempt. `acked` (blocking, run in a
    thread) returns how many of the messages the server has recorded as delivered.
    """
    fleet = Fleet(url=url, keep_seqs=True)
    client = Client(fleet, token, ack_mode="coalesce")
    result = CatchupResult()
    started = time.time()
    deadline = time.monotonic() + timeout
    await client.open(url)
    result.connect_seconds = time.time() - started
    runner = asyncio.create_task(client.run())
    try:
        while time.monotonic() < deadline and len(fleet.arrivals.get("catch-up", {})) < expected:
            await asyncio.sleep(0.002)
        got = fleet.arrivals.get("catch-up", {})
        times = sorted(got.values())
        result.frames, result.distinct = fleet.frames, len(got)
        result.arrivals = [t - started for t in times]
        if times:
            result.first_frame_seconds = times[0] - started
        if len(got) >= expected:
            result.all_frames_seconds = times[-1] - started
        result.in_seq_order = bool(fleet.seqs) and fleet.seqs == sorted(fleet.seqs)
        while time.monotonic() < deadline:
            if await asyncio.to_thread(acked) >= expected:
                result.all_acked_seconds = time.time() - started
                break
            await asyncio.sleep(0.02)
    finally:
        await client.close()
        runner.cancel()
    return result
