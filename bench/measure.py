"""Same-box references, memory sampling and py-spy profiles.

References (SPEC.md section 6): what this machine does, right now, without our code in the way.
- PostgreSQL: multi-row INSERTs of `rows` message-like rows into a plain (logged) table, one
  autocommitted statement after another, for `seconds` → rows/s. Logged like the messages
  table, so each commit pays the same WAL flush our batch commits pay.
- Redis: LPUSH then BRPOP of a small value on one connection, one round trip each, for
  `seconds` → ops/s (each push and each pop counts as one op).
"""

from __future__ import annotations

import collections
import contextlib
import re
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

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
