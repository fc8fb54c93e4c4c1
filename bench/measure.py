"""Same-box references, memory sampling and py-spy profiles.

References (SPEC.md section 6): what this machine does, right now, without our code in the way.
- PostgreSQL: multi-row INSERTs of `rows` message-like rows into a plain (logged) table, one
  autocommitted statement after another, for `seconds` → rows/s. Logged like the messages
  table, so each commit pays the same WAL flush our batch commits pay.
- Redis: LPUSH then BRPOP of a small value on one connection, one round trip each, for
  `seconds` → ops/s (each push and each pop counts as one op).
- RabbitMQ: `messages` persistent messages the size of one of our message frames through a
  fresh durable queue, published with confirms (at most `window` unconfirmed) and consumed by
  another process with manual acks (prefetch `prefetch`, acks coalesced per socket read like
  our clients' per burst) → delivered+acked msg/s, from the first publish to the last ack.
"""

from __future__ import annotations

import collections
import contextlib
import json
import multiprocessing
import re
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from urllib.parse import urlsplit

import pika
import pika.exceptions
import psutil
import psycopg
import redis

from tests.e2e.harness import BIN

# --- references ------------------------------------------------------------------------------


def postgres_insert_rate(dsn: str, *, seconds: float, rows: int = 1000) -> dict:
    """Return rows/s of back-to-back multi-row INSERTs (autocommit) into a scratch table."""
    placeholders = ",".join(["(%s,%s,%s,%s,%s)"] * rows)
    sql = f"INSERT INTO bench_reference (id, recipient_id, seq, content, created_at) VALUES {placeholders}"
    inserted = statements = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_reference")
        conn.execute(
            "CREATE TABLE bench_reference (id uuid PRIMARY KEY, recipient_id bigint NOT NULL,"
            " seq bigint NOT NULL, content text NOT NULL, created_at timestamptz NOT NULL)"
        )
        started = time.perf_counter()
        seq = 0
        while time.perf_counter() - started < seconds:
            now = datetime.now(UTC)
            params: list = []
            for _ in range(rows):
                seq += 1
                params += [uuid.uuid4(), seq % 1000, seq, f"reference row {seq}", now]
            conn.execute(sql, params)
            inserted += rows
            statements += 1
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE bench_reference")
    return {
        "rows_per_s": inserted / elapsed,
        "statements": statements,
        "rows_per_statement": rows,
        "seconds": elapsed,
    }


def redis_push_pop_rate(url: str, *, seconds: float) -> dict:
    """Return ops/s of an LPUSH/BRPOP loop on one connection (one round trip per op)."""
    client = redis.Redis.from_url(url)
    key = f"bench:reference:{uuid.uuid4().hex}"
    ops = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        client.lpush(key, b"x" * 64)
        client.brpop([key], timeout=1)
        ops += 2
    elapsed = time.perf_counter() - started
    client.delete(key)
    client.close()
    return {"ops_per_s": ops / elapsed, "round_trip_ms": 1000 * elapsed / ops, "seconds": elapsed}


RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json")


def rabbitmq_durable_rate(
    url: str,
    *,
    messages: int,
    window: int,
    prefetch: int = 500,
    ack_mode: str = "coalesce",
    size: int = 400,
    timeout: float = 60,
) -> dict:
    """Return delivered+acked msg/s through a durable RabbitMQ queue, or why it was not measured.

    A fresh durable classic queue (deleted afterwards; `x-expires` removes it should the run die
    first) gets `messages` persistent JSON bodies of `size` bytes, shaped like our `message`
    frame. This process publishes them with publisher confirms, keeping at most `window`
    unconfirmed (a pipelining producer, as p3's batches in flight are); a second process, with
    its own connection, consumes them with manual acks: `coalesce` acks the last delivery tag
    with `multiple=True` once per socket read (what our clients do per burst), `each` acks every
    message. The clock runs from the first publish to the consumer's last ack, taken as the
    answer to a round trip on its channel after that ack (so the broker has processed it).
    Both sides use pika's SelectConnection: a callback client that costs the broker's host far
    less CPU per message than an asyncio wrapper, so the figure is RabbitMQ's, not the client's.
    """
    where = _without_password(url)
    try:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        params.socket_timeout = 5
        setup = pika.BlockingConnection(params)
    except (pika.exceptions.AMQPError, OSError, ValueError) as exc:
        return {"not_measured": f"{where} unreachable: {_reason(exc)}"}
    queue = f"bench-reference-{uuid.uuid4().hex}"
    try:
        try:
            setup.channel().queue_declare(
                queue, durable=True, arguments={"x-queue-type": "classic", "x-expires": 600_000}
            )
        finally:
            setup.close()
        return _rabbitmq_run(
            url,
            params,
            queue,
            messages=messages,
            window=window,
            prefetch=prefetch,
            ack_mode=ack_mode,
            size=size,
            timeout=timeout,
        )
    except (pika.exceptions.AMQPError, OSError, TimeoutError, RuntimeError) as exc:
        return {"not_measured": f"{where}: {_reason(exc)}"}
    finally:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            teardown = pika.BlockingConnection(params)
            teardown.channel().queue_delete(queue)
            teardown.close()


def _rabbitmq_run(
    url: str,
    params: pika.URLParameters,
    queue: str,
    *,
    messages: int,
    window: int,
    prefetch: int,
    ack_mode: str,
    size: int,
    timeout: float,
) -> dict:
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    consumer = context.Process(
        target=_rabbitmq_consumer,
        args=(child, url, queue),
        kwargs={"expected": messages, "prefetch": prefetch, "ack_mode": ack_mode, "timeout": timeout},
        name="bench-rabbitmq-consumer",
        daemon=True,
    )
    consumer.start()
    try:
        if not parent.poll(30):
            raise TimeoutError("the consumer did not start within 30 s")
        answer = parent.recv()
        if answer[0] != "ready":
            raise RuntimeError(f"consumer: {answer[1]}")
        bodies = [_frame_like(seq, size) for seq in range(1, messages + 1)]
        broker_before = _broker_cpu_seconds()
        published = _rabbitmq_publish(params, queue, bodies, window=window, timeout=timeout)
        if not parent.poll(timeout):
            raise TimeoutError(f"the consumer had not acked all {messages:,} messages after {timeout:g} s")
        answer = parent.recv()
        broker_cpu = _broker_cpu_seconds() - broker_before
        if answer[0] != "done":
            raise RuntimeError(f"consumer: {answer[1]}")
        _, last_ack, ack_frames, left_ready, consumer_cpu = answer
    finally:
        consumer.join(timeout=5)
        if consumer.is_alive():
            consumer.kill()
            consumer.join()
    elapsed = last_ack - published["first_publish"]
    return {
        "delivered_per_s": messages / elapsed,
        "confirmed_per_s": messages / (published["last_confirm"] - published["first_publish"]),
        "messages": messages,
        "body_bytes": len(bodies[0]),
        "window": window,
        "prefetch": prefetch,
        "ack_mode": ack_mode,
        "ack_frames": ack_frames,
        "left_in_queue": left_ready,
        "seconds": elapsed,
        "cpu_ms_per_message": {
            "rabbitmq": round(1000 * broker_cpu / messages, 4) if broker_cpu else None,
            "publisher": round(1000 * published["cpu_seconds"] / messages, 4),
            "consumer": round(1000 * consumer_cpu / messages, 4),
        },
    }


def _rabbitmq_publish(
    params: pika.URLParameters, queue: str, bodies: list[bytes], *, window: int, timeout: float
) -> dict:
    """Publish `bodies` with confirms, at most `window` unconfirmed; return the times and CPU."""
    unconfirmed: collections.deque[int] = collections.deque()
    confirmed_alone: set[int] = set()  # confirmed out of order, without `multiple`
    state: dict = {"sent": 0, "error": None}
    cpu_started = time.thread_time()

    def fill(channel) -> None:
        while state["sent"] < len(bodies) and len(unconfirmed) < window:
            channel.basic_publish("", queue, bodies[state["sent"]], PERSISTENT)
            state["sent"] += 1
            unconfirmed.append(state["sent"])  # the channel's delivery tags count from 1

    def on_confirm(frame) -> None:
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            state["error"] = f"broker refused message {method.delivery_tag}"
            connection.close()
            return
        if method.multiple:
            while unconfirmed and unconfirmed[0] <= method.delivery_tag:
                unconfirmed.popleft()
        else:
            confirmed_alone.add(method.delivery_tag)
        while unconfirmed and unconfirmed[0] in confirmed_alone:
            confirmed_alone.discard(unconfirmed.popleft())
        if state["sent"] == len(bodies) and not unconfirmed:
            state["last_confirm"] = time.time()
            connection.close()
        else:
            fill(state["channel"])

    def start(channel) -> None:
        state["channel"] = channel
        state["first_publish"] = time.time()
        fill(channel)

    def on_channel(channel) -> None:
        channel.confirm_delivery(on_confirm, callback=lambda _frame: start(channel))

    def give_up() -> None:
        state["error"] = f"not all confirmed after {timeout:g} s ({len(unconfirmed):,} outstanding)"
        connection.close()

    def on_open_error(_connection, exc) -> None:
        state["error"] = _reason(exc)
        _connection.ioloop.stop()

    def on_close(_connection, exc) -> None:
        if "last_confirm" not in state and not state["error"]:
            state["error"] = f"connection closed: {_reason(exc)}"
        _connection.ioloop.stop()

    connection = pika.SelectConnection(
        params,
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_open_error_callback=on_open_error,
        on_close_callback=on_close,
    )
    connection.ioloop.call_later(timeout, give_up)
    connection.ioloop.start()
    if state["error"]:
        raise RuntimeError(f"publisher: {state['error']}")
    return {
        "first_publish": state["first_publish"],
        "last_confirm": state["last_confirm"],
        "cpu_seconds": time.thread_time() - cpu_started,
    }


def _rabbitmq_consumer(
    pipe: Connection,
    url: str,
    queue: str,
    *,
    expected: int,
    prefetch: int,
    ack_mode: str,
    timeout: float,
) -> None:
    """Consume `expected` messages from `queue` with manual acks; report on `pipe` (a child process).

    Sends ("ready",) once consuming, then ("done", wall clock of the last ack's round trip, ack
    frames sent, messages left ready in the queue, CPU seconds since ready), or ("error", reason).
    """
    state: dict = {"received": 0, "last_tag": 0, "flush_scheduled": False, "acks": 0, "reported": False}

    def report(*message) -> None:
        if not state["reported"]:
            state["reported"] = True
            pipe.send(message)

    def flush() -> None:
        state["flush_scheduled"] = False
        channel.basic_ack(state["last_tag"], multiple=True)
        state["acks"] += 1
        after_ack()

    def after_ack() -> None:
        if state["received"] == expected:
            # The broker answers on a channel in order: once this answer is back, every ack
            # sent before it has been processed.
            channel.queue_declare(queue, passive=True, callback=finished)

    def finished(frame) -> None:
        cpu = time.process_time() - state["cpu_at_ready"]
        report("done", time.time(), state["acks"], frame.method.message_count, cpu)
        connection.close()

    def on_message(_channel, method, _properties, _body) -> None:
        state["received"] += 1
        state["last_tag"] = method.delivery_tag
        if ack_mode == "each":
            channel.basic_ack(method.delivery_tag)
            state["acks"] += 1
            after_ack()
        elif not state["flush_scheduled"]:
            # Runs once the frames of this socket read have all been handed over: one ack per burst.
            state["flush_scheduled"] = True
            connection.ioloop.call_later(0, flush)

    def on_channel(opened) -> None:
        nonlocal channel
        channel = opened
        channel.basic_qos(
            prefetch_count=prefetch,
            callback=lambda _frame: channel.basic_consume(
                queue, on_message, callback=lambda _frame: report_ready()
            ),
        )

    def report_ready() -> None:
        state["cpu_at_ready"] = time.process_time()
        pipe.send(("ready",))

    def on_open_error(_connection, exc) -> None:
        report("error", _reason(exc))
        _connection.ioloop.stop()

    def give_up() -> None:
        report("error", f"{state['received']:,} of {expected:,} received after {timeout:g} s")
        connection.close()

    channel = None
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    connection = pika.SelectConnection(
        params,
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_open_error_callback=on_open_error,
        on_close_callback=lambda conn, _reason: conn.ioloop.stop(),
    )
    connection.ioloop.call_later(timeout + 30, give_up)
    connection.ioloop.start()
    report("error", "connection closed before all were acked")


def _frame_like(seq: int, size: int) -> bytes:
    """Return a JSON body shaped like our `message` frame, padded to `size` bytes with content."""
    frame = {
        "type": "message",
        "message": {
            "id": str(uuid.uuid4()),
            "seq": seq,
            "kind": "one_way",
            "conversation_id": None,
            "sender": {"type": "business", "id": 7, "name": "bench-sender-7"},
            "subject": "",
            "content": "",
            "content_type": "text",
            "priority": "normal",
            "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "attachments": [],
        },
    }
    bare = len(json.dumps(frame, separators=(",", ":")))
    frame["message"]["content"] = f"bench reference {seq} ".ljust(max(size - bare, 0), "x")
    return json.dumps(frame, separators=(",", ":")).encode()


def _broker_cpu_seconds() -> float:
    """Return the CPU seconds of the local RabbitMQ server (its beam.smp), 0 if none is visible."""
    total = 0.0
    for proc in psutil.process_iter(["name", "cpu_times"]):
        if proc.info["name"] == "beam.smp" and proc.info["cpu_times"]:
            total += proc.info["cpu_times"].user + proc.info["cpu_times"].system
    return total


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _reason(exc: BaseException) -> str:
    """Return a readable reason for a pika error (many carry their cause only in args)."""
    name, text = type(exc).__name__, str(exc) or repr(exc)
    return (text if text.startswith(name) else f"{name}: {text}")[:300]


# --- memory --------------------------------------------------------------------------------


@dataclass
class MemorySampler:
    """Sample the resident memory of named process trees every `interval` seconds in a thread.

    A tree's figure is the sum over the process and its children (Celery's pool processes).
    """

    pids: dict[str, int]
    interval: float = 0.5
    peaks: dict[str, float] = field(default_factory=dict)
    timeline: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def _rss_mb(self, pid: int) -> float:
        try:
            proc = psutil.Process(pid)
            total = proc.memory_info().rss
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    total += child.memory_info().rss
            return total / 2**20
        except psutil.Error:
            return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = {name: self._rss_mb(pid) for name, pid in self.pids.items()}
            self.timeline.append((time.time(), sample))
            for name, mb in sample.items():
                self.peaks[name] = max(self.peaks.get(name, 0.0), mb)
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@dataclass
class CpuMeter:
    """CPU seconds used by named process trees (and by every PostgreSQL server process).

    `cores(since)` turns two readings into cores busy on average: the figure that says which
    process is the limit of a phase on a 2-core machine.
    """

    pids: dict[str, int]
    # Counted alone, without their children (the benchmark process starts all the others).
    alone: tuple[str, ...] = ("bench",)

    @staticmethod
    def _tree_seconds(pid: int, *, children: bool = True) -> float:
        try:
            procs = [psutil.Process(pid)]
            if children:
                procs += procs[0].children(recursive=True)
        except psutil.Error:
            return 0.0
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    @staticmethod
    def _postgres_seconds() -> dict[int, float]:
        """Return CPU seconds per PostgreSQL server process (backends come and go)."""
        found = {}
        for proc in psutil.process_iter(["name", "cpu_times"]):
            if proc.info["name"] and proc.info["name"].startswith("postgres") and proc.info["cpu_times"]:
                found[proc.pid] = proc.info["cpu_times"].user + proc.info["cpu_times"].system
        return found

    def reading(self) -> tuple[float, dict[str, float], dict[int, float]]:
        seconds = {
            name: self._tree_seconds(pid, children=name not in self.alone) for name, pid in self.pids.items()
        }
        return time.monotonic(), seconds, self._postgres_seconds()

    def seconds(
        self, since: tuple[float, dict[str, float], dict[int, float]]
    ) -> tuple[float, dict[str, float]]:
        """Return (wall seconds, CPU seconds per name and "postgres") since an earlier reading."""
        start, before, pg_before = since
        now, after, pg_after = self.reading()
        used = {name: after[name] - before.get(name, 0.0) for name in after}
        # A backend that ended in between is not counted; one that started counts from zero.
        used["postgres"] = sum(seconds - pg_before.get(pid, 0.0) for pid, seconds in pg_after.items())
        return max(now - start, 1e-9), used

    def cores(self, since: tuple[float, dict[str, float], dict[int, float]]) -> dict[str, float]:
        wall, used = self.seconds(since)
        return {name: round(seconds / wall, 2) for name, seconds in used.items()}


# --- profiles ------------------------------------------------------------------------------


class Profiler:
    """`py-spy record` of one process (and its children) until `stop()`; raw collapsed stacks."""

    def __init__(self, *, pid: int, output: Path, subprocesses: bool = False, rate: int = 25) -> None:
        self.output = output
        self.error = ""
        argv = [
            str(BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(output),
            # Sample without pausing the process: slightly less exact stacks, far less overhead.
            "--nonblocking",
        ]
        if subprocesses:
            argv.append("--subprocesses")
        self._log = output.with_suffix(".log").open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)

    def stop(self) -> bool:
        """Stop sampling (SIGINT makes py-spy write its output); return whether it produced one."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        ok = self.output.exists() and self.output.stat().st_size > 0
        if not ok:
            self.error = self.output.with_suffix(".log").read_text(errors="replace")[-500:]
        return ok


def _frame_name(frame: str) -> str:
    """Shorten `func (/abs/path/file.py:123)` to `func (pkg/file.py:123)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("/site-packages/", "/work/main/", "/lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where})" if where else name


def summarize_profile(raw: Path, *, top: int = 25) -> dict:
    """Return the hottest functions of a py-spy raw profile: by own samples and inclusive.

    Inclusive counts each function once per stack; "ours" keeps only the project's code
    (apps/, messaging_project/), which tells which of our functions the time is spent under.
    """
    self_counts: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        total += count
        # Line numbers vary within a function: aggregate per function and file.
        names = [_frame_name(f).rsplit(":", 1)[0] + ")" for f in frames]
        self_counts[names[-1]] += count
        for name in set(names):
            inclusive[name] += count
            if "apps/" in name or "messaging_project/" in name:
                ours[name] += count

    def table(counter: collections.Counter[str]) -> list[dict]:
        return [
            {"function": name, "samples": n, "percent": round(100 * n / total, 1)}
            for name, n in counter.most_common(top)
        ]

    return {"samples": total, "self": table(self_counts), "inclusive": table(inclusive), "ours": table(ours)}


def profile_text(title: str, summary: dict) -> str:
    lines = [f"# {title}: {summary['samples']} samples (25 Hz, active threads only)"]
    for key, heading in (
        ("self", "own time (leaf function)"),
        ("ours", "inclusive, project code"),
        ("inclusive", "inclusive, all"),
    ):
        lines.append(f"\n## {heading}")
        lines += [f"{row['percent']:5.1f}%  {row['samples']:6d}  {row['function']}" for row in summary[key]]
    return "\n".join(lines) + "\n"


class PgActivitySampler:
    """Sample `pg_stat_activity` of one database every few ms: PostgreSQL's side of a profile.

    py-spy sees the Python processes only. This counts, per statement shape (literals folded)
    and wait event, how many backends were active in it on average: a statement at 1.5 keeps
    one and a half backends busy all through the phase. It is how the transitions' bad plans
    were found (a tick of acks probing every undelivered message).
    """

    LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")

    def __init__(self, dsn: str, *, database: str, interval: float = 0.005) -> None:
        self._dsn, self._database, self._interval = dsn, database, interval
        self.samples = 0
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-activity", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        query = (
            "SELECT query, coalesce(wait_event_type || ':' || wait_event, 'CPU') FROM pg_stat_activity"
            " WHERE datname = %s AND state = 'active' AND pid <> pg_backend_pid()"
        )
        with psycopg.connect(self._dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                for text, wait in conn.execute(query, [self._database]).fetchall():
                    shape = " ".join(self.LITERALS.sub("?", text).split())[:110]
                    self.counts[(shape, wait)] += 1
                self.samples += 1
                self._stop.wait(self._interval)

    def stop(self) -> str:
        """Stop sampling; return the report (active backends per statement, then per wait)."""
        self._stop.set()
        self._thread.join(timeout=5)
        n = max(self.samples, 1)
        by_statement: collections.Counter[str] = collections.Counter()
        for (shape, _), count in self.counts.items():
            by_statement[shape] += count
        lines = [f"# {self.samples} samples of pg_stat_activity; figures are active backends on average", ""]
        lines += [f"{count / n:6.3f}  {shape}" for shape, count in by_statement.most_common(25)]
        lines += ["", "## by wait event"]
        lines += [
            f"{count / n:6.3f}  {wait:24} {shape[:80]}"
            for (shape, wait), count in self.counts.most_common(25)
        ]
        return "\n".join(lines) + "\n"
