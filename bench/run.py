"""`make bench`: drive the real processes and measure what SPEC.md section 6 sets targets for.

    .venv/bin/python -m bench.run [options]        (make bench BENCH_ARGS="--clients 1000 ...")

What it does, in order (each phase with a progress bar; all traffic on 127.0.0.1):

1. Recreates the PostgreSQL database `bench_messaging` and migrates it; starts daphne, a Celery
   worker (2 processes) and beat with the default (production) timings, against it and a
   private redis-server (tests/e2e/harness.py's Stack, see bench/stack.py).
2. Creates enterprise senders (allowed to broadcast) and mobile users with tokens (bulk).
3. Measures the same-box references: multi-row INSERTs into PostgreSQL, LPUSH/BRPOP on Redis,
   and a durable RabbitMQ queue (publish with confirms → consume with acks), if one answers.
4. Connects the WebSocket clients (a child process), each acking every message it receives.
5. Phases:
   p1 single sends at a fixed rate → API latency, end-to-end latency (request sent → frame at
      the client; request sent → ack recorded, i.e. `delivered_at`), delivered+acked/s;
   p2 single sends as fast as `--max-concurrency` callers go → accepted/s, delivered+acked/s
      (profiled with py-spy);
   p3 batches of 1,000 (POST messages/batch/) → accepted/s, persisted/s, delivered+acked/s
      (profiled);
   p4 a broadcast to all (POST messages/broadcast/) → time until every client has it and
      every ack is recorded;
   p5 reconnect catch-up: 10,000 pending messages for one offline user, then it connects →
      time until all frames arrived and until all acks are recorded (run first, on an idle
      system, since the other phases may leave deliveries queued when their drain times out);
   p6 peak resident memory of web, worker (with its pool), beat and redis, sampled all along;
   p7-p11 (bench/phases.py): a same-run reference endpoint (bench/reference/, a bare DRF
      create doing our single send's durable write) under p2's load; ingest alone (p2 with the
      worker stopped); overload (an open loop at twice p2's rate); idle WebSockets on one
      extra web process; status webhooks to a local receiver while p3's batches run again.
   p13 (bench/metrics_cost.py): what recording the Prometheus metrics costs a single send —
      values recorded per send (from /metrics around a short closed loop of sends) times each
      recording call's cost (timed in multiprocess mode), over the CPU per send → percent.
   A phase whose endpoint answers 404/405 is reported "n/a: endpoint missing"; a phase that
   fails is reported failed, with the reason, and the run goes on.
6. Prints a table (figure, value, target, ratio to the reference, pass/fail) and writes
   bench-results/: results.json (every figure), bench.png (latency CDFs, throughput over
   time, catch-up arrivals), profile-*.txt (hottest functions) with the raw py-spy stacks,
   profile-*-postgres.txt (the statements PostgreSQL was busy in, from pg_stat_activity
   samples), and the processes' logs under run/.

Senders are used round-robin so that the per-sender rate limit (enterprise 10,000/min) is not
what is measured; every 429 or 503 is counted and shown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import psycopg
from tqdm import tqdm

from bench import phases as extra
from bench import report
from bench.clients import FleetHandle, catchup_run, fleet_main
from bench.measure import (
    RABBITMQ_URL,
    CpuMeter,
    MemorySampler,
    PgActivitySampler,
    Profiler,
    postgres_insert_rate,
    profile_text,
    rabbitmq_durable_rate,
    redis_push_pop_rate,
    summarize_profile,
)
from bench.metrics_cost import metrics_cost_phase
from bench.push import PushServers, push_phase
from bench.stack import (
    BenchStack,
    Mobile,
    backlog_create,
    configure_django,
    database_url,
    mobiles_create,
    recreate_database,
    senders_create,
)
from tests.e2e.harness import Api

REPO_ROOT = Path(__file__).resolve().parents[1]
MESSAGES = "/api/v1/messages/"
BATCH = "/api/v1/messages/batch/"
BROADCAST = "/api/v1/messages/broadcast/"
MISSING = (404, 405)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.split("\n", 1)[0])
    p.add_argument("--clients", type=int, default=500, help="WebSocket clients (one mobile user each)")
    p.add_argument("--senders", type=int, default=20, help="enterprise senders used round-robin")
    p.add_argument("--worker-concurrency", type=int, default=2)
    p.add_argument(
        "--web-processes", type=int, default=2, help="daphne processes on the web port (WEB_CONCURRENCY)"
    )
    p.add_argument("--rate", type=float, default=200, help="p1: single sends per second")
    p.add_argument("--rate-seconds", type=float, default=20, help="p1: duration")
    p.add_argument("--max-seconds", type=float, default=15, help="p2: duration")
    p.add_argument(
        "--max-concurrency", type=int, default=16, help="p2: concurrent callers; p1: most requests in flight"
    )
    p.add_argument(
        "--grace-seconds",
        type=float,
        default=10,
        help="p1: cancel requests unanswered this long after the last was due",
    )
    p.add_argument(
        "--batches",
        type=int,
        # 10 take about 2 s here, a third of it the pipeline filling (the first batch's messages
        # are stored, claimed and written before any ack): too short to be steady, as the
        # RabbitMQ reference's 20,000 messages were.
        default=30,
        help="p3 and p11: number of batches",
    )
    p.add_argument("--batch-size", type=int, default=1000, help="p3: messages per batch (≤1,000)")
    p.add_argument("--batch-concurrency", type=int, default=2, help="p3: batches in flight")
    p.add_argument("--catchup", type=int, default=10_000, help="p5: pending messages of the offline user")
    p.add_argument("--drain-seconds", type=float, default=30, help="longest wait for deliveries per phase")
    p.add_argument("--reference-seconds", type=float, default=4, help="each reference loop's duration")
    p.add_argument(
        "--ack-mode",
        choices=("coalesce", "each"),
        default="coalesce",
        help="how the WebSocket clients (and the RabbitMQ reference's consumer) ack",
    )
    p.add_argument(
        "--rabbitmq-url",
        default=RABBITMQ_URL,
        help="RabbitMQ of the same-box reference ('' skips it; unreachable: reported, not measured)",
    )
    p.add_argument(
        "--rabbitmq-messages",
        type=int,
        # 20,000 take about a second here: too short a run to be steady.
        default=50_000,
        help="RabbitMQ reference: messages through the queue",
    )
    p.add_argument(
        "--rabbitmq-window",
        type=int,
        default=0,
        help="RabbitMQ reference: most unconfirmed publishes (0: as many as p3 has in flight,"
        " --batch-size x --batch-concurrency)",
    )
    p.add_argument("--rabbitmq-prefetch", type=int, default=500, help="RabbitMQ reference: consumer prefetch")
    p.add_argument("--no-profile", dest="profile", action="store_false", help="skip py-spy")
    p.add_argument(
        "--phases",
        default="1,2,3,4,5,7,8,9,10,11,12,13",
        help="phases to run, e.g. 1,5 (7 reference endpoint, 8 ingest alone, 9 overload, 10 idle sockets,"
        " 11 webhooks during batches, 12 push to offline users, 13 cost of recording metrics)",
    )
    p.add_argument(
        "--metrics-seconds", type=float, default=5, help="p13: duration of its closed loop of single sends"
    )
    p.add_argument(
        "--overload-rate", type=float, default=0, help="p9: req/s offered (0: twice p2's accepted)"
    )
    p.add_argument("--overload-seconds", type=float, default=20, help="p9: duration")
    p.add_argument("--overload-connections", type=int, default=512, help="p9: most requests in flight")
    p.add_argument("--overload-drain-seconds", type=float, default=60, help="p9: longest wait for deliveries")
    p.add_argument("--idle-sockets", type=int, default=20_000, help="p10: idle WebSocket connections")
    p.add_argument(
        "--idle-concurrency",
        type=int,
        default=50,
        # More in flight does not connect faster (one process, CPU-bound): handshakes then wait
        # past daphne's 5 s handshake timeout and the token lookup's pool timeout and fail.
        help="p10: connects in flight",
    )
    p.add_argument("--database", default="bench_messaging", help="dropped and recreated on every run")
    p.add_argument("--log-level", default="WARNING", help="LOG_LEVEL of the processes")
    p.add_argument(
        "--settings",
        default="test",
        choices=("test", "production"),
        # production keeps connections (CONN_MAX_AGE 60): under ASGI each request thread keeps
        # its own, and the server's max_connections runs out (other users of it too).
        help="messaging_project.settings.<name> of the processes (see README)",
    )
    p.add_argument("--out", default=str(REPO_ROOT / "bench-results"))
    return p.parse_args(argv)


# --- HTTP load ------------------------------------------------------------------------------


@dataclass(slots=True)
class Req:
    start: float  # wall clock when the request was due (fixed rate) or sent
    latency: float  # seconds until the full answer, from `start`
    status: int
    ids: list[str] = field(default_factory=list)
    error: str = ""
    body: Any = None
    retry_after: str | None = None  # the Retry-After header, if any


class Load:
    """Round-robin senders and recipients for the phases' requests."""

    def __init__(self, base_url: str, sender_tokens: list[str], mobiles: list[Mobile]) -> None:
        self.base_url = base_url
        self.tokens = sender_tokens
        self.phones = [m.phone for m in mobiles]
        self.n = 0

    def next(self) -> tuple[str, str]:
        self.n += 1
        return self.tokens[self.n % len(self.tokens)], self.phones[self.n % len(self.phones)]

    def session(self, limit: int) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            self.base_url,
            connector=aiohttp.TCPConnector(limit=limit, force_close=False),
            timeout=aiohttp.ClientTimeout(total=30),
        )


async def _post(session: aiohttp.ClientSession, path: str, token: str, body: dict, started: float) -> Req:
    """POST and time it from `started` (a time.perf_counter value)."""
    wall = time.time() - (time.perf_counter() - started)
    try:
        async with session.post(path, json=body, headers={"Authorization": f"Token {token}"}) as resp:
            raw = await resp.read()
            latency = time.perf_counter() - started
            status = resp.status
            retry_after = resp.headers.get("Retry-After")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Req(wall, time.perf_counter() - started, 0, error=repr(exc)[:200])
    ids: list[str] = []
    error = ""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    if status in (200, 202) and isinstance(data, dict):
        if "ids" in data:
            ids = [str(i) for i in data["ids"]]
        elif "id" in data and path == MESSAGES:
            ids = [str(data["id"])]
    else:
        error = raw[:300].decode(errors="replace")
    return Req(wall, latency, status, ids, error, data if not error else None, retry_after)


def _one_way(load: Load, tag: str, n: int) -> tuple[str, dict]:
    token, phone = load.next()
    return token, {"recipient_phone_number": phone, "content": f"bench {tag} {n}"}


async def fixed_rate(
    load: Load, *, rate: float, seconds: float, tag: str, limit: int, grace: float
) -> list[Req]:
    """Open loop: request i is due at start + i/rate whatever the answers; latency from due time.

    At most `limit` requests are in flight (each holds a database connection in the web
    process, and the PostgreSQL server is shared); the others wait, and that wait counts in
    their latency. Requests still unanswered `grace` seconds after the last one was due are
    cancelled and reported with status -1: a saturated system must not stretch the run.
    """
    total = int(rate * seconds)
    results: list[Req] = []
    bar = tqdm(total=total, desc=f"{tag} {rate:g} req/s", unit="req", leave=True)

    async def one(i: int, due: float) -> None:
        token, body = _one_way(load, tag, i)
        try:
            req = await _post(session, MESSAGES, token, body, due)
        except asyncio.CancelledError:
            results.append(Req(time.time() - (time.perf_counter() - due), 0.0, -1, error="cancelled"))
            raise
        results.append(req)
        bar.update()

    async with load.session(limit=limit) as session:
        tasks = []
        t0 = time.perf_counter() + 0.05
        for i in range(total):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    bar.close()
    return results


async def closed_loop(
    load: Load, *, concurrency: int, seconds: float, tag: str, path: str = MESSAGES
) -> list[Req]:
    """`concurrency` callers, each sending the next request as soon as the last one answered.

    `path`: our single send by default; the reference project's create endpoint (p7) takes the
    same body.
    """
    results: list[Req] = []
    bar = tqdm(total=int(seconds), desc=f"{tag} max x{concurrency}", unit="s", leave=True)
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def caller() -> None:
        while time.perf_counter() < deadline:
            token, body = _one_way(load, tag, next(counter))
            results.append(await _post(session, path, token, body, time.perf_counter()))

    async def ticker() -> None:
        while time.perf_counter() < deadline:
            await asyncio.sleep(1)
            bar.update()
            bar.set_postfix(requests=len(results))

    async with load.session(limit=concurrency) as session:
        await asyncio.gather(ticker(), *(caller() for _ in range(concurrency)))
    bar.close()
    return results


async def batches(load: Load, *, count: int, size: int, concurrency: int, tag: str) -> list[Req]:
    """Send `count` batches of `size`; stop after the first if the endpoint is missing."""
    results: list[Req] = []
    bar = tqdm(total=count * size, desc=f"{tag} batches of {size}", unit="msg", leave=True)
    semaphore = asyncio.Semaphore(concurrency)

    def body(k: int) -> tuple[str, dict]:
        token = load.tokens[k % len(load.tokens)]
        msgs = []
        for j in range(size):
            _, phone = load.next()
            msgs.append({"recipient_phone_number": phone, "content": f"bench {tag} {k}-{j}"})
        return token, {"messages": msgs}

    async def one(k: int) -> None:
        token, payload = body(k)
        async with semaphore:
            req = await _post(session, BATCH, token, payload, time.perf_counter())
        results.append(req)
        bar.update(len(req.ids))

    async with load.session(limit=concurrency) as session:
        await one(0)
        if results[0].status not in MISSING:
            await asyncio.gather(*(one(k) for k in range(1, count)))
    bar.close()
    return results


async def post_once(load: Load, path: str, body: dict) -> Req:
    async with load.session(limit=1) as session:
        return await _post(session, path, load.tokens[0], body, time.perf_counter())


def warm_up(load: Load) -> None:
    """Send a few of each request first: lazy imports and new connections are not measured."""
    asyncio.run(closed_loop(load, concurrency=4, seconds=3, tag="warm-up"))
    asyncio.run(batches(load, count=2, size=20, concurrency=1, tag="warm-up"))


# --- database probes ------------------------------------------------------------------------


class Db:
    """Read-only probes of the messages table (psycopg, autocommit)."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)

    def delivered_of(self, ids: list[str]) -> set[str]:
        """Return which of `ids` are delivered (acked)."""
        rows = self.conn.execute(
            "SELECT id::text FROM messaging_message WHERE id = ANY(%s::uuid[]) AND delivered_at IS NOT NULL",
            (ids,),
        ).fetchall()
        return {r[0] for r in rows}

    def stored_count(self, ids: list[str]) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM messaging_message WHERE id = ANY(%s::uuid[])", (ids,)
        ).fetchone()
        return row[0]

    def stages(self, ids: list[str]) -> dict[str, tuple[float, float | None, float | None]]:
        """Return id -> (created_at, sent_at, delivered_at) as epoch seconds (None when not yet)."""
        rows = self.conn.execute(
            "SELECT id::text, extract(epoch FROM created_at)::float8, extract(epoch FROM sent_at)::float8,"
            " extract(epoch FROM delivered_at)::float8 FROM messaging_message WHERE id = ANY(%s::uuid[])",
            (ids,),
        ).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def times(self, ids: list[str]) -> dict[str, tuple[float, float | None, str]]:
        """Return id -> (created_at, delivered_at or None, status) as epoch seconds."""
        rows = self.conn.execute(
            "SELECT id::text, extract(epoch FROM created_at)::float8,"
            " extract(epoch FROM delivered_at)::float8, status"
            " FROM messaging_message WHERE id = ANY(%s::uuid[])",
            (ids,),
        ).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def content_counts(self, content: str) -> tuple[int, int, float | None]:
        row = self.conn.execute(
            "SELECT count(*), count(delivered_at), extract(epoch FROM max(delivered_at))::float8"
            " FROM messaging_message WHERE content = %s",
            (content,),
        ).fetchone()
        return row[0], row[1], row[2]

    def recipient_delivered(self, recipient_id: int) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM messaging_message WHERE recipient_id = %s AND delivered_at IS NOT NULL",
            (recipient_id,),
        ).fetchone()
        return row[0]

    def timeline(self) -> list[tuple[float, float | None]]:
        return self.conn.execute(
            "SELECT extract(epoch FROM created_at)::float8, extract(epoch FROM delivered_at)::float8"
            " FROM messaging_message"
        ).fetchall()

    def status_counts(self) -> dict[str, int]:
        return dict(
            self.conn.execute("SELECT status, count(*) FROM messaging_message GROUP BY status").fetchall()
        )


def drain(
    db: Db,
    ids: list[str],
    *,
    seconds: float,
    desc: str,
    frames: tuple[FleetHandle, str] | None = None,
) -> tuple[int, float]:
    """Wait until every message in `ids` is delivered (acked) or `seconds` pass; return (count, waited).

    The waiting must not load what it measures: with `frames` (the fleet and the phase's tag) it
    first waits, without asking the database, until the clients have every frame (or stop
    getting more for a second), then asks PostgreSQL only about the ids not yet seen acked. The
    figures come from the stored times, not from when this loop looks.
    """
    started = time.monotonic()
    bar = tqdm(total=len(ids), desc=desc, unit="msg", leave=True)
    if frames is not None and ids:
        fleet, tag = frames
        seen, still_since = -1, time.monotonic()
        while time.monotonic() - started <= seconds:
            count = fleet.call("count", tag=tag)
            if count != seen:
                seen, still_since = count, time.monotonic()
            if count >= len(ids) or time.monotonic() - still_since > 1.0:
                break
            time.sleep(0.1)
    remaining = list(ids)
    while True:
        if remaining:
            acked = db.delivered_of(remaining)
            remaining = [pk for pk in remaining if pk not in acked]
        bar.n = len(ids) - len(remaining)
        bar.refresh()
        if not remaining or time.monotonic() - started > seconds:
            break
        time.sleep(0.25)
    bar.close()
    return len(ids) - len(remaining), time.monotonic() - started


# --- phase summaries ------------------------------------------------------------------------


def percentiles(values: list[float], points=(50, 95, 99)) -> dict[str, float | None]:
    if not values:
        return {f"p{p}": None for p in points}
    ordered = sorted(values)
    out = {}
    for p in points:
        k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        out[f"p{p}"] = ordered[k] * 1000  # ms
    return out


def statuses(reqs: list[Req]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in reqs:
        counts[str(r.status)] = counts.get(str(r.status), 0) + 1
    return counts


def sends_summary(reqs: list[Req], db: Db, fleet: FleetHandle, tag: str, drain_seconds: float) -> dict:
    """Summarise single sends: API figures, then wait for acks and compute end-to-end figures."""
    ok = [r for r in reqs if r.status == 202 and r.ids]
    first = min((r.start for r in reqs), default=0.0)
    last_answer = max((r.start + r.latency for r in reqs), default=0.0)
    ids = [r.ids[0] for r in ok]
    delivered, waited = drain(
        db, ids, seconds=drain_seconds, desc=f"{tag} acks recorded", frames=(fleet, tag)
    )
    times = db.times(ids)
    frames = fleet.call("frames", tag=tag)
    e2e, frame_lat, delivered_at = [], [], []
    for r in ok:
        _created, acked, _ = times.get(r.ids[0], (None, None, None))
        if acked is not None:
            e2e.append(acked - r.start)
            delivered_at.append(acked)
        if r.ids[0] in frames:
            frame_lat.append(frames[r.ids[0]] - r.start)
    window = (max(delivered_at) - first) if delivered_at else None
    errors = sorted({f"{r.status}: {r.error[:120]}" for r in reqs if r.status != 202})[:5]
    return {
        "requests": len(reqs),
        "statuses": statuses(reqs),
        "errors": errors,
        "accepted": len(ok),
        "send_seconds": last_answer - first,
        "accepted_per_s": len(ok) / (last_answer - first) if reqs else 0.0,
        "api_ms": percentiles([r.latency for r in reqs if r.status == 202]),
        "stored": db.stored_count(ids),
        "frames_received": len(frames),
        "delivered": delivered,
        "undelivered_after_drain": len(ids) - delivered,
        "drain_waited_s": waited,
        "delivered_per_s": delivered / window if window else 0.0,
        "frame_ms": percentiles(frame_lat),
        "e2e_ms": percentiles(e2e),
        "raw": {
            "api_latency_s": [round(r.latency, 5) for r in reqs if r.status == 202],
            "e2e_latency_s": [round(v, 5) for v in e2e],
            "frame_latency_s": [round(v, 5) for v in frame_lat],
        },
    }


def stage_latencies(db: Db, fleet: FleetHandle, ids: list[str], tag: str) -> dict[str, dict]:
    """Return where a message's time went: stored → sent (relay, worker), sent → frame at the
    client (channel layer, web), frame → ack recorded (the client's ack, receipts), in ms.

    `sent_at` is the last write's (a redelivered message's is later than its first frame).
    """
    stages = db.stages(ids)
    frames = fleet.call("frames", tag=tag)
    to_sent, to_frame, to_ack = [], [], []
    for pk, (created, sent, delivered) in stages.items():
        frame = frames.get(pk)
        if sent is not None:
            to_sent.append(sent - created)
            if frame is not None and frame >= sent:
                to_frame.append(frame - sent)
        if frame is not None and delivered is not None:
            to_ack.append(delivered - frame)
    return {
        "stored_to_sent_ms": percentiles(to_sent),
        "sent_to_frame_ms": percentiles(to_frame),
        "frame_to_ack_recorded_ms": percentiles(to_ack),
    }


def batch_summary(reqs: list[Req], db: Db, fleet: FleetHandle, tag: str, drain_seconds: float) -> dict:
    if reqs and reqs[0].status in MISSING:
        return {"status": f"n/a: endpoint missing (HTTP {reqs[0].status})"}
    ok = [r for r in reqs if r.status == 202]
    ids = [i for r in ok for i in r.ids]
    first = min(r.start for r in reqs)
    last_answer = max(r.start + r.latency for r in reqs)
    window = last_answer - first
    stored = db.stored_count(ids)
    delivered, waited = drain(
        db, ids, seconds=drain_seconds, desc=f"{tag} acks recorded", frames=(fleet, tag)
    )
    acked = [t[1] for t in db.times(ids).values() if t[1] is not None]
    return {
        "status": "ok" if ok and len(ok) == len(reqs) else "failed",
        "batches": len(reqs),
        "statuses": statuses(reqs),
        "errors": sorted({f"{r.status}: {r.error[:160]}" for r in reqs if r.status != 202})[:5],
        "accepted": len(ids),
        "seconds": window,
        "accepted_per_s": len(ids) / window if window else 0.0,
        "persisted": stored,
        "persisted_per_s": stored / window if window else 0.0,
        "batch_api_ms": percentiles([r.latency for r in ok]),
        "delivered": delivered,
        "undelivered_after_drain": len(ids) - delivered,
        "drain_waited_s": waited,
        "delivered_per_s": delivered / (max(acked) - first) if acked else 0.0,
        "stages": stage_latencies(db, fleet, ids, tag),
    }


def broadcast_phase(load: Load, db: Db, fleet: FleetHandle, drain_seconds: float) -> dict:
    marker = f"bench p4 {uuid.uuid4().hex}"
    req = asyncio.run(post_once(load, BROADCAST, {"all": True, "content": marker}))
    if req.status in MISSING:
        return {"status": f"n/a: endpoint missing (HTTP {req.status})"}
    if req.status != 202:
        return {"status": "failed", "http_status": req.status, "error": req.error}
    total = req.body.get("total") if isinstance(req.body, dict) else None
    expected = total if isinstance(total, int) else len(load.phones)
    # The audience may hold users with no open socket (p5's, gone after its phase): their
    # message rightly waits as pending. Delivery is complete once every connected client has it.
    online = min(expected, len(load.phones))
    broadcast_id = req.body.get("id") if isinstance(req.body, dict) else None
    api = Api(load.base_url, load.tokens[0])
    progress: dict = {}
    started = time.monotonic()
    bar = tqdm(desc="p4 broadcast acks", unit="msg", leave=True)
    stored = delivered = 0
    last_ack = None
    while time.monotonic() - started < drain_seconds:
        # The database says when each ack was recorded; the progress endpoint is the contract.
        stored, delivered, last_ack = db.content_counts(marker)
        if broadcast_id:
            answer = api.get(f"{BROADCAST}{broadcast_id}/")
            progress = answer.body if answer.status == 200 else {"http_status": answer.status}
        bar.total = max(online, 1)
        bar.n = delivered
        bar.set_postfix(stored=stored)
        if stored >= expected and delivered >= online:
            break
        time.sleep(0.5)
    bar.close()
    frames = fleet.call("frames", tag="p4")
    arrival = sorted(frames.values())
    return {
        "status": "ok" if stored >= expected and delivered >= online else "incomplete",
        "api_ms": req.latency * 1000,
        "audience_expected": len(load.phones),
        "broadcast_id": broadcast_id,
        "progress": progress,
        "total": total,
        "stored": stored,
        "frames_received": len(frames),
        "delivered": delivered,
        "first_frame_s": (arrival[0] - req.start) if arrival else None,
        "online": online,
        "all_frames_s": (arrival[-1] - req.start) if arrival and len(arrival) >= online else None,
        "all_acked_s": (last_ack - req.start) if last_ack and delivered >= online else None,
        "delivered_per_s": delivered / (last_ack - req.start) if last_ack else 0.0,
    }


def catchup_phase(args, stack: BenchStack, db: Db, sender_username: str) -> dict:
    [mobile] = mobiles_create(args.clients, 1)
    t0 = time.monotonic()
    backlog_create(recipient=mobile, sender_username=sender_username, count=args.catchup)
    stored_s = time.monotonic() - t0
    probe = Db(database_url(args.database))
    print(f"p5 stored {args.catchup} pending messages in {stored_s:.1f} s; connecting the offline client")
    result = asyncio.run(
        catchup_run(
            stack.ws_url,
            mobile.token,
            expected=args.catchup,
            timeout=max(args.drain_seconds, 30),
            acked=lambda: probe.recipient_delivered(mobile.id),
        )
    )
    probe.conn.close()
    out = asdict(result)
    arrivals = out.pop("arrivals")
    out["pending"] = args.catchup
    out["raw"] = {"arrival_s": [round(a, 4) for a in arrivals[:: max(1, len(arrivals) // 500)]]}
    print(
        f"p5 all frames: {result.all_frames_seconds}, all acked: {result.all_acked_seconds}"
        f" ({result.distinct}/{args.catchup} distinct frames)"
    )
    return out


# --- the run --------------------------------------------------------------------------------


def rabbitmq_reference(args) -> dict:
    """Measure the RabbitMQ reference; whatever goes wrong is reported, the bench goes on."""
    if not args.rabbitmq_url:
        return {"not_measured": "--rabbitmq-url is empty"}
    try:
        return rabbitmq_durable_rate(
            args.rabbitmq_url,
            messages=args.rabbitmq_messages,
            window=args.rabbitmq_window or min(args.batch_size, 1000) * args.batch_concurrency,
            prefetch=args.rabbitmq_prefetch,
            ack_mode=args.ack_mode,
        )
    except Exception as exc:  # noqa: BLE001 - a reference that fails is reported, the run goes on
        traceback.print_exc()
        return {"not_measured": f"{type(exc).__name__}: {exc}"[:300]}


def run_phase(name: str, results: dict, fn, *fn_args, meter: CpuMeter | None = None) -> Any:
    """Run one phase; record a failure (with its traceback) instead of stopping the run.

    With a `meter`, the phase's result also gets `cpu_cores`: cores each process kept busy.
    """
    since = meter.reading() if meter is not None else None
    try:
        value = fn(*fn_args)
    except Exception as exc:  # noqa: BLE001 - a failed phase is reported, the run goes on
        traceback.print_exc()
        results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
        return None
    if meter is not None and since is not None and isinstance(value, dict):
        wall, used = meter.seconds(since)
        value["cpu_cores"] = {name: round(seconds / wall, 2) for name, seconds in used.items()}
        value["cpu_seconds"] = {name: round(seconds, 3) for name, seconds in used.items()}
    results[name] = value
    return value


def profiled(args, stack: BenchStack, out: Path, label: str, profiles: dict, fn, *fn_args) -> Any:
    """Run `fn` while py-spy samples the web and worker processes (PostgreSQL: its activity); summarise."""
    if not args.profile:
        return fn(*fn_args)
    assert stack.web is not None and stack.worker is not None
    # Both trees: the web launcher's daphne processes, the worker's pool.
    targets = {"web": (stack.web.pid, True), "worker": (stack.worker.pid, True)}
    running = {
        proc: Profiler(pid=pid, output=out / f"profile-{label}-{proc}.raw.txt", subprocesses=children)
        for proc, (pid, children) in targets.items()
    }
    postgres = PgActivitySampler(database_url("postgres"), database=args.database)
    try:
        return fn(*fn_args)
    finally:
        (out / f"profile-{label}-postgres.txt").write_text(postgres.stop())
        for proc, profiler in running.items():
            if profiler.stop():
                summary = summarize_profile(profiler.output)
                (out / f"profile-{label}-{proc}.txt").write_text(profile_text(f"{label} {proc}", summary))
                profiles[f"{label}-{proc}"] = summary
            else:
                profiles[f"{label}-{proc}"] = {"error": profiler.error or "py-spy produced no output"}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = {p.strip() for p in args.phases.split(",")}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    started_at = time.time()
    results: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_at)),
        "args": vars(args),
        "machine": report.machine(),
    }
    profiles: dict[str, Any] = {}
    # p10 holds thousands of sockets: raise the soft limit now, the processes inherit it.
    results["rlimit_nofile"] = extra.raise_nofile()
    ops = SimpleNamespace(
        Load=Load,
        closed_loop=closed_loop,
        fixed_rate=fixed_rate,
        sends_summary=sends_summary,
        drain=drain,
        batches=batches,
        batch_summary=batch_summary,
        percentiles=percentiles,
        statuses=statuses,
    )

    print(f"bench: recreating database {args.database} and migrating it")
    recreate_database(args.database)
    stack = BenchStack(
        database_name=args.database,
        workdir=workdir,
        concurrency=args.worker_concurrency,
        web_processes=args.web_processes,
        log_level=args.log_level,
        settings=args.settings,
    )
    configure_django(database_name=args.database, redis_url=stack.redis_url)
    # p12: the local FCM server must be known to every process before they start.
    push_servers = PushServers(workdir) if "12" in phases else None
    if push_servers is not None:
        stack.env.update(push_servers.env)
    fleet_proc = None
    fleet: FleetHandle | None = None
    sampler = None
    db = None
    try:
        print("bench: starting redis-server, daphne, Celery worker and beat")
        stack.start()
        assert stack.web and stack.worker and stack.beat and stack.redis
        sampler = MemorySampler(
            {
                "web": stack.web.pid,
                "worker": stack.worker.pid,
                "beat": stack.beat.pid,
                "redis": stack.redis.pid,
            }
        ).start()
        t0 = time.monotonic()
        sender_tokens = senders_create(args.senders)
        mobiles = mobiles_create(0, args.clients)
        print(
            f"bench: {args.senders} senders and {args.clients} mobile users in {time.monotonic() - t0:.1f} s"
        )
        db = Db(database_url(args.database))

        print(
            f"bench: references ({args.reference_seconds:g} s each;"
            f" RabbitMQ {args.rabbitmq_messages:,} messages)"
        )
        results["reference"] = {
            "postgres": postgres_insert_rate(database_url(args.database), seconds=args.reference_seconds),
            "redis": redis_push_pop_rate(stack.redis_url, seconds=args.reference_seconds),
            "rabbitmq": rabbitmq_reference(args),
        }
        ref = results["reference"]
        rabbit = ref["rabbitmq"]
        print(
            f"  PostgreSQL {ref['postgres']['rows_per_s']:,.0f} rows/s;"
            f" Redis {ref['redis']['ops_per_s']:,.0f} ops/s;"
            + (
                f" RabbitMQ {rabbit['delivered_per_s']:,.0f} msg/s delivered+acked"
                if "delivered_per_s" in rabbit
                else f" RabbitMQ not measured: {rabbit['not_measured']}"
            )
        )

        parent, child = multiprocessing.get_context("spawn").Pipe()
        fleet_proc = multiprocessing.get_context("spawn").Process(
            target=fleet_main, args=(child, stack.ws_url, args.ack_mode), name="bench-clients", daemon=True
        )
        fleet_proc.start()
        fleet = FleetHandle(parent)
        with tqdm(total=1, desc=f"connecting {args.clients} WebSocket clients", leave=True) as bar:
            results["connect"] = fleet.call("connect", tokens=[m.token for m in mobiles])
            bar.update()
        print(f"  {results['connect']}")
        # Presence is written on connect; give the last connects a moment to settle.
        time.sleep(1)
        load = Load(stack.base_url, sender_tokens, mobiles)
        warm_up(load)
        meter = CpuMeter(
            {
                "web": stack.web.pid,
                "worker": stack.worker.pid,
                "beat": stack.beat.pid,
                "redis": stack.redis.pid,
                "clients": fleet_proc.pid,
                "bench": os.getpid(),
            }
        )
        # The catch-up goes first, on an idle system: what the throughput phases leave queued
        # (their drains are bounded) would otherwise decide it.
        if "5" in phases:
            run_phase("p5", results, catchup_phase, args, stack, db, "bench-sender-0", meter=meter)
        # Next, while the system is still idle: its CPU per send must be the sends' own.
        if "13" in phases:
            run_phase("p13", results, metrics_cost_phase, args, stack, load, db, fleet, ops)

        if "1" in phases:
            run_phase(
                "p1",
                results,
                lambda: sends_summary(
                    asyncio.run(
                        fixed_rate(
                            load,
                            rate=args.rate,
                            seconds=args.rate_seconds,
                            tag="p1",
                            limit=args.max_concurrency,
                            grace=args.grace_seconds,
                        )
                    ),
                    db,
                    fleet,
                    "p1",
                    args.drain_seconds,
                ),
                meter=meter,
            )
        if "2" in phases:
            run_phase(
                "p2",
                results,
                lambda: profiled(
                    args,
                    stack,
                    out,
                    "p2",
                    profiles,
                    lambda: sends_summary(
                        asyncio.run(
                            closed_loop(
                                load, concurrency=args.max_concurrency, seconds=args.max_seconds, tag="p2"
                            )
                        ),
                        db,
                        fleet,
                        "p2",
                        args.drain_seconds,
                    ),
                ),
                meter=meter,
            )
        if "3" in phases:
            run_phase(
                "p3",
                results,
                lambda: profiled(
                    args,
                    stack,
                    out,
                    "p3",
                    profiles,
                    lambda: batch_summary(
                        asyncio.run(
                            batches(
                                load,
                                count=args.batches,
                                size=min(args.batch_size, 1000),
                                concurrency=args.batch_concurrency,
                                tag="p3",
                            )
                        ),
                        db,
                        fleet,
                        "p3",
                        args.drain_seconds,
                    ),
                ),
                meter=meter,
            )
        if "4" in phases:
            run_phase("p4", results, broadcast_phase, load, db, fleet, args.drain_seconds, meter=meter)
        if "11" in phases:
            run_phase("p11", results, extra.webhook_phase, args, results, load, db, fleet, ops, meter=meter)
        if push_servers is not None:
            run_phase("p12", results, push_phase, args, load, push_servers, meter=meter)
        # Our stack is idle (the fleet's sockets stay open) while the reference runs.
        if "7" in phases:
            run_phase("p7", results, extra.reference_phase, args, stack, mobiles, workdir, ops)
        if "8" in phases:
            run_phase("p8", results, extra.ingest_phase, args, stack, load, db, fleet, ops, meter=meter)
        if "9" in phases:
            run_phase("p9", results, extra.overload_phase, args, results, load, db, ops, meter=meter)
        if "10" in phases and args.idle_sockets > 0:
            run_phase("p10", results, extra.idle_sockets_phase, args, stack, workdir)
        results["fleet"] = fleet.call("stats")
        results["final_status_counts"] = db.status_counts()
        results["timeline"] = db.timeline()
    finally:
        if sampler is not None:
            sampler.stop()
            results["memory_peak_mb"] = sampler.peaks
            results["memory_timeline"] = [
                (t, s) for t, s in sampler.timeline[:: max(1, len(sampler.timeline) // 600)]
            ]
        if fleet is not None:
            with contextlib.suppress(OSError, EOFError, TimeoutError):
                fleet.call("stop")
        if fleet_proc is not None:
            fleet_proc.join(timeout=10)
            if fleet_proc.is_alive():
                fleet_proc.kill()
        if db is not None:
            db.conn.close()
        for proc in stack.processes():
            results.setdefault("process_exit", {})[proc.name] = (
                "running" if proc.alive() else proc.popen.returncode
            )
        stack.close()
        if push_servers is not None:
            push_servers.stop()

    results["profiles"] = profiles
    results["duration_s"] = time.time() - started_at
    table = report.figures(results)
    results["table"] = table
    text = report.render(table, results)
    print()
    print(text)
    (out / "table.txt").write_text(text + "\n")
    timeline = results.pop("timeline", [])
    report.plot(results, timeline, out / "bench.png")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nbench: wrote {out / 'results.json'}, {out / 'bench.png'}, {out / 'table.txt'}", end="")
    print(", profile-*.txt" if profiles else "", end="")
    print(f"; logs in {workdir} (took {results['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
