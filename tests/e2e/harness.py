"""Process management for the end-to-end tests: a private redis-server, daphne, Celery worker and beat.

A `Stack` runs the three Procfile processes against the test's PostgreSQL database and a
redis-server of its own (random port, no persistence), so a test can kill the worker or the
web process, stop Redis or start a second beat without touching anybody else; `process_env`
gives one kind of process variables of its own (a skewed clock). Every process runs in its own
session (process group), writes its output to a log file, and is killed with its whole group at
teardown. Failing waits quote the tail of every log.

`MobileSocket` is a real WebSocket client (the `websockets` package) that records every frame
(and when it arrived) in a background thread and can acknowledge messages as they arrive; it
serves the business socket too (`Stack.business_ws_url`), which speaks the same frames. `Api`
is a minimal JSON HTTP client on the standard library.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOG_TAIL_LINES = 40

# Short timings so retries, timeouts and sweeps happen within seconds (settings/base.py names).
FAST_TIMINGS = {
    "MESSAGING_ACK_TIMEOUT_SECONDS": "2",
    "MESSAGING_MAX_RETRIES": "2",
    "MESSAGING_RETRY_BASE_SECONDS": "0.5",
    "MESSAGING_RETRY_MAX_SECONDS": "2",
    "MESSAGING_DUE_SWEEP_SECONDS": "0.5",
    "PENDING_SWEEP_SECONDS": "1",
    "STALE_CONNECTION_SWEEP_SECONDS": "2",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
    "WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "WEBHOOK_SWEEP_SECONDS": "0.5",
    "WEBHOOK_LEASE_SECONDS": "3",
    "LOG_LEVEL": "INFO",
}
# Variables of the calling shell that would point the processes somewhere else.
_INHERITED_BLOCKLIST = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")


def free_port() -> int:
    """Return a TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float,
    what: str,
    diagnostics: Callable[[], str] = lambda: "",
    interval: float = 0.05,
) -> Any:
    """Poll `condition` until it returns a truthy value (returned) or `timeout` passes (raise)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
        except (OSError, ValueError, AssertionError) as exc:
            # Connection refused while a process starts, a half-written log line, ...
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            error = f" (last error: {last_error!r})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{error}\n{diagnostics()}")
        time.sleep(interval)


# Periodic sweeps and the tests' own status polling would fill every tail; leave them out.
_NOISE = re.compile(r"tasks\.sweep_|Sending due task|\"GET /api/v1/messages/[^ ]+/\" 200")


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join([line for line in text.splitlines() if not _NOISE.search(line)][-lines:])


# --- processes ------------------------------------------------------------------------------


class Process:
    """One OS process in its own session, its output in `log`."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._file = log.open("ab")
        self._finished = False
        self.popen = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal_group(self, signum: int) -> None:
        if self._finished:
            return  # never signal a process group id that may have been reused since
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole process group (the main process and, for Celery, its pool)."""
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)
        self._finish()

    def stop(self, grace: float = 5) -> None:
        """SIGTERM the group, SIGKILL whatever is left after `grace` seconds."""
        if self.alive():
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # Stragglers (e.g. pool children) share the group even after the leader exits.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        self._finish()

    def _finish(self) -> None:
        self._finished = True
        self._file.close()

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with {self.popen.returncode}"
        return f"--- {self.name} (pid {self.pid}, {state}), {self.log} ---\n{_tail(self.log)}"


class Stack:
    """redis-server, daphne, a Celery worker and Celery beat for one PostgreSQL database."""

    beat_log_level = "info"
    worker_log_level = "info"
    worker_concurrency = 2
    worker_name = "e2e"

    def __init__(self, *, database_name: str, workdir: Path) -> None:
        self.workdir = workdir
        self.redis_port = free_port()
        self.web_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.base_url = f"http://127.0.0.1:{self.web_port}"
        self.ws_url = f"ws://127.0.0.1:{self.web_port}/ws/mobile/"
        self.env = {k: v for k, v in os.environ.items() if k not in _INHERITED_BLOCKLIST}
        self.env.update(FAST_TIMINGS)
        self.env.update(
            DJANGO_SETTINGS_MODULE="messaging_project.settings.test",
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database_name}",
            REDIS_URL=self.redis_url,
            PYTHONUNBUFFERED="1",
            # As production: messages leave through beat's outbox relay (settings.test also runs
            # a relay round after each commit), and each process has a connection pool.
            MESSAGING_RELAY_ON_COMMIT="false",
            DATABASE_POOL="true",
        )
        self.redis: Process | None = None
        self.web: Process | None = None
        # Two daphne processes on one socket (messaging_project/web.py): every test then also
        # shows that a client is served whichever process its connection lands on.
        self.web_processes = 2
        self.worker: Process | None = None
        self.beat: Process | None = None
        self._incarnations = itertools.count(1)
        self._retired: list[Process] = []
        # Variables for one kind of process only ("web", "worker", "beat"), over `env`.
        self.process_env: dict[str, dict[str, str]] = {}
        # Beats started next to the first one (tests of two relays and two schedulers at once).
        self.extra_beats: list[Process] = []

    @property
    def business_ws_url(self) -> str:
        """Return the URL of the business WebSocket (`/ws/business/`)."""
        return f"ws://127.0.0.1:{self.web_port}/ws/business/"

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> Stack:
        """Start every process (in parallel) and return once each one is ready."""
        self.spawn_all()
        self.wait_web_ready()
        self.wait_worker_ready()
        wait_until(
            lambda: "beat: Starting" in self.beat.log_text(),
            timeout=60,
            what="celery beat to start",
            diagnostics=self.diagnostics,
        )
        return self

    def spawn_all(self) -> None:
        """Start redis-server, daphne, the worker and beat, without waiting for them."""
        self.start_redis()
        self.web = self._spawn_web()
        self.worker = self._spawn_worker()
        self.beat = self._spawn_beat()

    def _spawn_web(self) -> Process:
        return self._spawn(
            "web",
            [
                str(BIN / "python"),
                "-m",
                "messaging_project.web",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.web_port),
                "--processes",
                str(self.web_processes),
            ],
        )

    def _spawn_beat(self, schedule: str = "beat-schedule") -> Process:
        return self._spawn(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "messaging_project",
                "beat",
                "-l",
                self.beat_log_level,
                "--schedule",
                str(self.workdir / schedule),
            ],
        )

    def close(self) -> None:
        """Stop every process this stack started, all at once, then the broker."""
        apps = [
            p for p in (self.beat, *self.extra_beats, self.worker, self.web, *self._retired) if p is not None
        ]
        for proc in apps:
            if proc.alive():
                proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in apps:
            proc.stop(grace=max(0.0, deadline - time.monotonic()))
        if self.redis is not None:
            self.redis.stop(grace=3)

    def _spawn(self, name: str, argv: list[str]) -> Process:
        n = next(self._incarnations)
        return Process(name, argv, env=self._env_of(name), log=self.workdir / f"{n:02d}-{name}.log")

    def _env_of(self, name: str) -> dict[str, str]:
        return {**self.env, **self.process_env.get(name, {})}

    def _spawn_worker(self) -> Process:
        n = next(self._incarnations)
        return Process(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "messaging_project",
                "worker",
                "-Q",
                "high,default,webhooks,low",
                "-c",
                str(self.worker_concurrency),
                "-l",
                self.worker_log_level,
                "-n",
                f"{self.worker_name}{n}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            env=self._env_of("worker"),
            log=self.workdir / f"{n:02d}-worker.log",
        )

    # --- redis-server -------------------------------------------------------------------

    def start_redis(self) -> None:
        """Start (or restart) redis-server on this stack's port, empty and without persistence."""
        self.redis = self._spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
        )
        wait_until(
            self._redis_answers, timeout=10, what="redis-server to answer PING", diagnostics=self.diagnostics
        )

    def stop_redis(self) -> None:
        """Stop redis-server (SIGTERM, nothing saved) and wait until its port refuses connections."""
        assert self.redis is not None
        self.redis.stop(grace=5)
        self._retired.append(self.redis)
        self.redis = None
        wait_until(lambda: not self._redis_answers(), timeout=10, what="redis-server to go away")

    def broker(self) -> redis.Redis:
        """Return a client of this stack's redis-server (the broker and the channel layer)."""
        return redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=5)

    def _redis_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.redis_port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    # --- daphne and the worker ----------------------------------------------------------

    def wait_web_ready(self) -> None:
        api = Api(self.base_url)
        wait_until(
            lambda: api.get("/health/live").status == 200,
            timeout=60,
            what="daphne to answer /health/live",
            diagnostics=self.diagnostics,
        )

    def wait_worker_ready(self) -> None:
        worker = self.worker
        assert worker is not None
        wait_until(
            lambda: worker.alive() and " ready." in worker.log_text(),
            timeout=60,
            what="the Celery worker to be ready",
            diagnostics=self.diagnostics,
        )

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool at once: no warm shutdown, no task acknowledged."""
        assert self.worker is not None
        self.worker.kill()
        self._retired.append(self.worker)
        self.worker = None

    def start_worker(self) -> None:
        self.worker = self._spawn_worker()
        self.wait_worker_ready()

    def kill_web(self) -> None:
        """SIGKILL the web process group (the supervisor and every daphne): no disconnect runs."""
        assert self.web is not None
        self.web.kill()
        self._retired.append(self.web)
        self.web = None

    def start_web(self) -> None:
        """Start the web process again on the same port and wait until it answers."""
        self.web = self._spawn_web()
        self.wait_web_ready()

    def start_extra_beat(self) -> Process:
        """Start one more Celery beat (with its own schedule file, so its own relay thread)."""
        beat = self._spawn_beat(f"beat-schedule-{len(self.extra_beats) + 2}")
        self.extra_beats.append(beat)
        wait_until(
            lambda: "beat: Starting" in beat.log_text(),
            timeout=60,
            what="the extra celery beat to start",
            diagnostics=self.diagnostics,
        )
        return beat

    # --- diagnostics --------------------------------------------------------------------

    def processes(self) -> list[Process]:
        return [
            p
            for p in (*self._retired, self.redis, self.web, self.worker, self.beat, *self.extra_beats)
            if p is not None
        ]

    def diagnostics(self) -> str:
        """Return the tail of every process's log, for assertion messages."""
        return "\n".join(p.describe() for p in self.processes())

    def wait(self, condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
        """Poll `condition` like `wait_until`, quoting the processes' logs on a timeout."""
        return wait_until(condition, timeout=timeout, what=what, diagnostics=self.diagnostics, interval=0.1)


# --- HTTP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    status: int
    body: Any
    headers: dict[str, str]


class Api:
    """A JSON client on urllib; proxies from the environment are ignored (all traffic is local)."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.token = token
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def as_(self, token: str) -> Api:
        return Api(self.base_url, token)

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 15) -> Response:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                status, raw, resp_headers = resp.status, resp.read(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            status, raw, resp_headers = exc.code, exc.read(), dict(exc.headers)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return Response(status, parsed, resp_headers)

    def get(self, path: str, **kwargs) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs) -> Response:
        return self.request("POST", path, body, **kwargs)


# --- WebSocket ------------------------------------------------------------------------------


class MobileSocket:
    """A mobile app's WebSocket: records every frame; acknowledges messages while `acking`."""

    def __init__(self, url: str, *, token: str | None = None, acking: bool = True) -> None:
        headers = {"Authorization": f"Token {token}"} if token else None
        self.acking = acking
        self.frames: list[dict] = []
        # When each frame arrived (time.time(), comparable with the server's timestamps).
        self.arrivals: list[float] = []
        self.close_code: int | None = None
        self._changed = threading.Condition()
        self._conn: ClientConnection = connect(
            url, additional_headers=headers, proxy=None, open_timeout=10, close_timeout=2, legacy=True
        )
        self._reader = threading.Thread(target=self._read, name="mobile-socket", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for raw in self._conn:
                frame = json.loads(raw)
                arrived = time.time()  # before the ack: the server's delivered_at comes after it
                if frame.get("type") == "message" and self.acking:
                    self.send({"type": "ack", "message_ids": [frame["message"]["id"]]})
                with self._changed:
                    self.frames.append(frame)
                    self.arrivals.append(arrived)
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            rcvd = self._conn.protocol.close_rcvd
            with self._changed:
                self.close_code = rcvd.code if rcvd is not None else 1006
                self._changed.notify_all()

    # --- sending ------------------------------------------------------------------------

    def send(self, frame: dict) -> None:
        with contextlib.suppress(ConnectionClosed):
            self._conn.send(json.dumps(frame))

    def send_raw(self, data: str | bytes) -> None:
        """Send `data` as it is: a text frame (str) or a binary frame (bytes)."""
        with contextlib.suppress(ConnectionClosed):
            self._conn.send(data)

    def ack(self, ids: list[str]) -> None:
        self.send({"type": "ack", "message_ids": ids})

    def read(self, ids: list[str]) -> None:
        self.send({"type": "read", "message_ids": ids})

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
        self._reader.join(timeout=5)

    # --- what arrived -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def messages(self) -> list[dict]:
        """Return the `message` payloads received so far, in arrival order (duplicates kept)."""
        with self._changed:
            return [f["message"] for f in self.frames if f.get("type") == "message"]

    def message_ids(self) -> set[str]:
        return {m["id"] for m in self.messages()}

    def frames_of(self, kind: str) -> list[dict]:
        """Return the frames of type `kind` received so far, in arrival order."""
        with self._changed:
            return [f for f in self.frames if f.get("type") == kind]

    def statuses(self, message_id: str) -> list[str]:
        """Return the statuses the `status` frames reported for `message_id`, in arrival order."""
        return [f["status"] for f in self.frames_of("status") if f["message_id"] == message_id]

    def wait_for(self, predicate: Callable[[MobileSocket], Any], *, timeout: float, what: str) -> Any:
        """Block until `predicate(self)` is truthy (returned), the socket closes, or `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate(self)
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    state = f"closed with {self.close_code}" if self.closed else "open"
                    raise AssertionError(
                        f"timed out after {timeout:g} s waiting for {what} (socket {state}); "
                        f"frames: {self.frames[-10:]!r}"
                    )
                self._changed.wait(min(remaining, 0.5))

    def wait_ready(self, timeout: float = 10) -> MobileSocket:
        """Ping and wait for the pong: once it arrives the server has finished connect().

        (connect() registers presence and runs the catch-up; frames are handled in order.)
        """
        before = sum(1 for f in self.frames if f.get("type") == "pong")
        self.send({"type": "ping"})
        self.wait_for(
            lambda s: sum(1 for f in s.frames if f.get("type") == "pong") > before,
            timeout=timeout,
            what="pong",
        )
        return self

    def stays_open(self, seconds: float) -> bool:
        """Return whether the socket is still open after `seconds` (returns early if it closes)."""
        with self._changed:
            self._changed.wait_for(lambda: self.closed, timeout=seconds)
            return not self.closed

    def wait_closed(self, timeout: float = 10) -> int:
        self.wait_for(lambda s: s.closed, timeout=timeout, what="the server to close the socket")
        assert self.close_code is not None
        return self.close_code
