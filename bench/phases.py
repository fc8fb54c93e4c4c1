"""Phases 7-10 of `make bench`: a same-run reference endpoint, ingest alone, overload, idle sockets.

p7  REFERENCE: bench/reference/ (a bare DRF CreateAPIView doing our single send's durable write:
    lock the recipient, bump its last_seq, insert the row, one transaction) served by
    `messaging_project.web --application bench.reference.asgi:application` with as many processes
    as our web, on its own port and database, while our stack is idle; p2's closed loop against
    it → req/s, API p50/p95, CPU ms per request (its web processes + PostgreSQL backends).
p8  INGEST ALONE: p2's closed loop with our worker stopped (SIGSTOP of its process group),
    SIGCONT after, then the backlog is drained and checked → accepted req/s, p95, web CPU/req.
p9  OVERLOAD: an open loop at twice p2's accepted rate (up to 512 connections) → accepted
    p50/p95, 503s and whether they carried Retry-After, other answers; then drain: lost =
    accepted - delivered.
p10 IDLE SOCKETS: one extra web process (`--processes 1`) on its own port; N mobile users, N
    WebSocket connections from a child process → connected, failed, connect time, the web
    process's RSS before/after (KB per socket), pongs of a random sample of 200.
p11 WEBHOOKS: every sender registers an endpoint for `message.delivered` on a local receiver
    (tests/webhooks/receiver.py, a threaded http.server in this process), then p3's batches run
    again → events received/s (while the batches are delivered, and overall), how long after
    the last ack the last event arrives, and the batches' delivered+acked/s against p3's.

The HTTP helpers (closed_loop, fixed_rate, sends_summary, drain) live in bench/run.py and are
handed in as `ops`, so that this module does not import the script that imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import resource
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import psycopg
from tqdm import tqdm

from bench.measure import CpuMeter
from bench.stack import BenchStack, database_url, mobiles_create
from tests.e2e.harness import BIN, REPO_ROOT, Api, Process, free_port, wait_until
from tests.webhooks.receiver import Receiver

REFERENCE_APPLICATION = "bench.reference.asgi:application"
REFERENCE_PATH = "/notes/"
IDLE_SAMPLE = 200


def ms_per(seconds: float, count: int) -> float | None:
    return 1000 * seconds / count if count else None


# --- p7: the reference endpoint -------------------------------------------------------------


def reference_database(name: str) -> str:
    """bench_wt_main → bench_wt_main_reference (dropped and recreated on every run)."""
    return f"{name}_reference"


def reference_prepare(name: str, *, tokens: int, phones: list[str]) -> list[str]:
    """Recreate and migrate the reference database; insert users with DRF tokens and recipients."""
    if not name.startswith("bench"):
        raise ValueError(f"refusing to drop {name!r}")
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.reference.settings",
        "BENCH_REFERENCE_DATABASE_URL": database_url(name),
    }
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "--verbosity", "0"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
    )
    keys = [secrets.token_hex(20) for _ in range(tokens)]
    with psycopg.connect(database_url(name), autocommit=True) as conn:
        for n, key in enumerate(keys):
            (user_id,) = conn.execute(
                "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email,"
                " is_staff, is_active, date_joined) VALUES ('!', false, %s, '', '', '', false, true, now())"
                " RETURNING id",
                (f"reference-sender-{n}",),
            ).fetchone()
            conn.execute(
                "INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, now(), %s)", (key, user_id)
            )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO notes_recipient (phone, last_seq) VALUES (%s, 0)", [(p,) for p in phones]
            )
    return keys


def reference_phase(args, stack: BenchStack, mobiles: list, workdir: Path, ops: SimpleNamespace) -> dict:
    name = reference_database(args.database)
    tokens = reference_prepare(name, tokens=args.senders, phones=[m.phone for m in mobiles])
    port = free_port()
    env = {
        **stack.env,
        "DJANGO_SETTINGS_MODULE": "bench.reference.settings",
        "BENCH_REFERENCE_DATABASE_URL": database_url(name),
    }
    proc = Process(
        "reference-web",
        [
            str(BIN / "python"),
            "-m",
            "messaging_project.web",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--processes",
            str(args.web_processes),
            "--application",
            REFERENCE_APPLICATION,
        ],
        env=env,
        log=workdir / "reference-web.log",
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        api = Api(base_url)
        wait_until(
            lambda: proc.alive() and api.get(REFERENCE_PATH).status in (401, 403, 405),
            timeout=60,
            what="the reference web to answer",
            diagnostics=proc.describe,
        )
        load = ops.Load(base_url, tokens, mobiles)
        asyncio.run(ops.closed_loop(load, concurrency=4, seconds=3, tag="p7 warm-up", path=REFERENCE_PATH))
        meter = CpuMeter({"web": proc.pid})
        since = meter.reading()
        reqs = asyncio.run(
            ops.closed_loop(
                load,
                concurrency=args.max_concurrency,
                seconds=args.max_seconds,
                tag="p7",
                path=REFERENCE_PATH,
            )
        )
        _wall, used = meter.seconds(since)
        with psycopg.connect(database_url(name), autocommit=True) as conn:
            (stored,) = conn.execute("SELECT count(*) FROM notes_note").fetchone()
    finally:
        proc.stop()
    ok = [r for r in reqs if r.status == 201]
    first = min((r.start for r in reqs), default=0.0)
    last = max((r.start + r.latency for r in reqs), default=0.0)
    return {
        "status": "ok" if ok and len(ok) == len(reqs) else "failed",
        "database": name,
        "requests": len(reqs),
        "statuses": ops.statuses(reqs),
        "errors": sorted({f"{r.status}: {r.error[:120]}" for r in reqs if r.status != 201})[:5],
        "accepted": len(ok),
        "accepted_per_s": len(ok) / (last - first) if last > first else 0.0,
        "stored": stored,  # includes the warm-up's
        "api_ms": ops.percentiles([r.latency for r in ok]),
        "cpu_ms_per_request": {
            "web": ms_per(used["web"], len(ok)),
            "postgres": ms_per(used["postgres"], len(ok)),
            "total": ms_per(used["web"] + used["postgres"], len(ok)),
        },
        "raw": {"api_latency_s": [round(r.latency, 5) for r in ok]},
    }


# --- p8: ingest alone (worker stopped) ------------------------------------------------------


def ingest_phase(args, stack: BenchStack, load, db, fleet, ops: SimpleNamespace) -> dict:
    assert stack.worker is not None and stack.web is not None
    meter = CpuMeter({"web": stack.web.pid})
    since = meter.reading()
    stack.worker.signal_group(signal.SIGSTOP)
    try:
        reqs = asyncio.run(
            ops.closed_loop(load, concurrency=args.max_concurrency, seconds=args.max_seconds, tag="p8")
        )
        _wall, used = meter.seconds(since)
    finally:
        stack.worker.signal_group(signal.SIGCONT)
    out = ops.sends_summary(reqs, db, fleet, "p8", args.drain_seconds)
    out["status"] = "ok" if out["accepted"] and out["undelivered_after_drain"] == 0 else "incomplete"
    out["cpu_ms_per_request"] = {
        "web": ms_per(used["web"], out["accepted"]),
        "postgres": ms_per(used["postgres"], out["accepted"]),
    }
    return out


# --- p9: overload ----------------------------------------------------------------------------


def overload_rate(args, results: dict) -> tuple[float, str]:
    if args.overload_rate:
        return args.overload_rate, "--overload-rate"
    for name in ("p2", "p8"):
        rate = (results.get(name) or {}).get("accepted_per_s")
        if rate:
            return 2 * rate, f"2 x {name} accepted"
    return 200.0, "default (p2 not run)"


def overload_phase(args, results: dict, load, db, ops: SimpleNamespace) -> dict:
    rate, source = overload_rate(args, results)
    reqs = asyncio.run(
        ops.fixed_rate(
            load,
            rate=rate,
            seconds=args.overload_seconds,
            tag="p9",
            limit=args.overload_connections,
            grace=args.grace_seconds,
        )
    )
    ok = [r for r in reqs if r.status == 202 and r.ids]
    ids = [r.ids[0] for r in ok]
    unavailable = [r for r in reqs if r.status == 503]
    first = min((r.start for r in reqs), default=0.0)
    last = max((r.start + r.latency for r in reqs if r.status > 0), default=first)
    delivered, waited = ops.drain(db, ids, seconds=args.overload_drain_seconds, desc="p9 acks recorded")
    return {
        "status": "ok",
        "offered_per_s": rate,
        "rate_source": source,
        "seconds": args.overload_seconds,
        "connections": args.overload_connections,
        "requests": len(reqs),
        "statuses": ops.statuses(reqs),
        "errors": sorted({f"{r.status}: {r.error[:120]}" for r in reqs if r.status not in (202, 503)})[:5],
        "accepted": len(ok),
        "accepted_per_s": len(ok) / (last - first) if last > first else 0.0,
        "api_ms": ops.percentiles([r.latency for r in ok]),
        "unavailable_503": len(unavailable),
        "unavailable_with_retry_after": sum(1 for r in unavailable if r.retry_after),
        "other_statuses": {k: v for k, v in ops.statuses(reqs).items() if k not in ("202", "503", "-1")},
        "cancelled": sum(1 for r in reqs if r.status == -1),
        "stored": db.stored_count(ids),
        "delivered": delivered,
        "lost": len(ids) - delivered,
        "drain_waited_s": waited,
        "raw": {"api_latency_s": [round(r.latency, 5) for r in ok]},
    }


# --- p10: idle sockets ------------------------------------------------------------------------


# Enough for 20,000 sockets on each side plus the processes' own files.
WANTED_NOFILE = 65_536


def raise_nofile() -> dict:
    """Raise this process's RLIMIT_NOFILE (the hard limit too, when allowed: root); return both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < WANTED_NOFILE:
        with contextlib.suppress(ValueError, OSError):  # only root may raise a hard limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (WANTED_NOFILE, WANTED_NOFILE))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": soft, "hard": hard}


async def _idle_connect(url: str, tokens: list[str], concurrency: int, conn: Connection) -> tuple[list, dict]:
    from websockets.asyncio.client import connect

    sockets: list = []
    errors: Counter[str] = Counter()
    semaphore = asyncio.Semaphore(concurrency)
    done = 0

    async def one(token: str) -> None:
        nonlocal done
        async with semaphore:
            try:
                ws = await connect(
                    url,
                    additional_headers={"Authorization": f"Token {token}"},
                    # A server out of file descriptors leaves connects in its backlog.
                    open_timeout=30,
                    close_timeout=2,
                    ping_interval=None,
                    proxy=None,
                )
                sockets.append(ws)
            except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
                errors[type(exc).__name__ + ": " + str(exc)[:80]] += 1
            done += 1
            if done % 250 == 0:
                conn.send(("progress", done))

    started = time.perf_counter()
    await asyncio.gather(*(one(t) for t in tokens))
    seconds = time.perf_counter() - started
    return sockets, {
        "connected": len(sockets),
        "failed": sum(errors.values()),
        "errors": dict(errors.most_common(5)),
        "connect_seconds": seconds,
    }


async def _idle_ping(sockets: list, sample: int) -> dict:
    """App-level ping ({"type": "ping"}) on a random sample; count the pongs within 10 s."""
    from websockets.exceptions import ConnectionClosed

    chosen = random.sample(sockets, min(sample, len(sockets)))

    async def one(ws) -> bool:
        try:
            await ws.send(json.dumps({"type": "ping"}))
            deadline = time.monotonic() + 10
            while (left := deadline - time.monotonic()) > 0:
                frame = json.loads(await asyncio.wait_for(ws.recv(), left))
                if isinstance(frame, dict) and frame.get("type") == "pong":
                    return True
        except (ConnectionClosed, TimeoutError, ValueError):
            return False
        return False

    answers = await asyncio.gather(*(one(ws) for ws in chosen))
    closed = sum(1 for ws in sockets if ws.close_code is not None)
    return {"sampled": len(chosen), "pongs": sum(answers), "closed_by_now": closed}


async def _idle_close(sockets: list) -> None:
    semaphore = asyncio.Semaphore(500)

    async def one(ws) -> None:
        async with semaphore:
            with contextlib.suppress(Exception):  # closing; whatever happens is fine
                await ws.close()

    await asyncio.gather(*(one(ws) for ws in sockets))


def idle_main(conn: Connection, url: str, tokens: list[str], concurrency: int, sample: int) -> None:
    """Child process: open the connections, then answer `ping` and `close` commands."""
    limits = raise_nofile()

    async def main() -> None:
        sockets, stats = await _idle_connect(url, tokens, concurrency, conn)
        conn.send(("connected", {**stats, "client_rlimit_nofile": limits}))
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "ping":
                conn.send(("pinged", await _idle_ping(sockets, sample)))
            elif command == "close":
                await _idle_close(sockets)
                conn.send(("closed", {}))
                return

    asyncio.run(main())


def idle_sockets_phase(args, stack: BenchStack, workdir: Path) -> dict:
    count = args.idle_sockets
    needed = count + 200  # the sockets, plus the process's own files, pools and Redis
    limits = raise_nofile()
    t0 = time.monotonic()
    # Numbers after the fleet's and p5's user.
    mobiles = mobiles_create(args.clients + 1, count)
    users_s = time.monotonic() - t0
    print(f"p10 {count:,} mobile users with tokens in {users_s:.1f} s")
    port = free_port()
    web = Process(
        "web-idle",
        [
            str(BIN / "python"),
            "-m",
            "messaging_project.web",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--processes",
            "1",
        ],
        env=stack.env,
        log=workdir / "web-idle.log",
    )
    child = None
    out: dict[str, Any] = {"requested": count, "users_create_s": users_s, "bench_rlimit_nofile": limits}
    try:
        api = Api(f"http://127.0.0.1:{port}")
        wait_until(
            lambda: web.alive() and api.get("/health/live").status == 200,
            timeout=60,
            what="the idle-socket web process",
            diagnostics=web.describe,
        )
        server = psutil.Process(web.pid)
        # The web process inherited this process's raised limit; raise it too if it did not.
        with_limit = server.rlimit(psutil.RLIMIT_NOFILE)
        if with_limit[0] < with_limit[1]:
            with contextlib.suppress(psutil.Error, OSError):
                server.rlimit(psutil.RLIMIT_NOFILE, (with_limit[1], with_limit[1]))
        server_limit = server.rlimit(psutil.RLIMIT_NOFILE)
        out["server_rlimit_nofile"] = {"soft": server_limit[0], "hard": server_limit[1]}
        too_low = [
            f"{who} RLIMIT_NOFILE {lim} < {needed:,} needed"
            for who, lim in (("server", server_limit[0]), ("client", limits["soft"]))
            if lim != resource.RLIM_INFINITY and lim < needed
        ]
        out["rlimit_too_low"] = too_low
        if too_low:
            print("p10 WARNING: " + "; ".join(too_low) + " (hard limit; the run measures what fits)")
        time.sleep(1)
        out["rss_before_mb"] = server.memory_info().rss / 2**20
        parent, child_end = multiprocessing.get_context("spawn").Pipe()
        child = multiprocessing.get_context("spawn").Process(
            target=idle_main,
            args=(
                child_end,
                f"ws://127.0.0.1:{port}/ws/mobile/",
                [m.token for m in mobiles],
                args.idle_concurrency,
                IDLE_SAMPLE,
            ),
            name="bench-idle-sockets",
            daemon=True,
        )
        child.start()
        bar = tqdm(total=count, desc=f"p10 {count:,} idle WebSockets", unit="conn", leave=True)
        while True:
            if not parent.poll(300):
                raise TimeoutError("the idle-socket client process stopped answering")
            kind, payload = parent.recv()
            if kind == "progress":
                bar.n = payload
                bar.refresh()
                continue
            bar.n = payload["connected"] + payload["failed"]
            bar.close()
            out.update(payload)
            break
        time.sleep(2)  # let the last handshakes settle before reading memory
        out["rss_after_mb"] = server.memory_info().rss / 2**20
        out["kb_per_socket"] = (
            1024 * (out["rss_after_mb"] - out["rss_before_mb"]) / out["connected"]
            if out["connected"]
            else None
        )
        out["server_fds"] = server.num_fds()
        parent.send("ping")
        if not parent.poll(60):
            raise TimeoutError("no answer to the ping sample")
        out.update(parent.recv()[1])
        parent.send("close")
        parent.poll(60)
        print(
            f"p10 connected {out['connected']:,}/{count:,} in {out['connect_seconds']:.1f} s,"
            f" {out.get('kb_per_socket') or 0:.1f} KB/socket, {out['pongs']}/{out['sampled']} pongs"
        )
        out["status"] = "ok" if out["connected"] == count else "incomplete"
    finally:
        if child is not None:
            child.join(timeout=20)
            if child.is_alive():
                child.kill()
        web.stop()
    return out


# --- p11: status webhooks while batches are delivered ---------------------------------------


def webhook_phase(args, results: dict, load, db, fleet, ops: SimpleNamespace) -> dict:
    """Register a `message.delivered` endpoint per sender on a local receiver; rerun p3's batches."""
    receiver = Receiver()
    endpoints: list[tuple[Api, int]] = []
    try:
        for token in load.tokens:
            api = Api(load.base_url, token)
            created = api.post(
                "/api/v1/webhooks/",
                {"url": receiver.url, "events": ["message.delivered"], "description": "bench"},
            )
            if created.status in (404, 405):
                return {"status": f"n/a: endpoint missing (HTTP {created.status})"}
            if created.status != 201:
                return {"status": "failed", "error": f"register: {created.status} {created.body}"}
            endpoints.append((api, created.body["id"]))
        reqs = asyncio.run(
            ops.batches(
                load,
                count=args.batches,
                size=min(args.batch_size, 1000),
                concurrency=args.batch_concurrency,
                tag="p11",
            )
        )
        batch = ops.batch_summary(reqs, db, fleet, "p11", args.drain_seconds)
        expected = batch.get("delivered", 0)
        started = time.monotonic()
        bar = tqdm(total=expected, desc="p11 webhook events received", unit="evt", leave=True)
        while time.monotonic() - started < args.drain_seconds:
            bar.n = len(set(receiver.successful_ids()))
            bar.refresh()
            if bar.n >= expected:
                break
            time.sleep(0.25)
        bar.close()
        arrivals = sorted(r.at for r in receiver.requests)
        unique = len(set(receiver.successful_ids()))
        first_request = min(r.start for r in reqs) if reqs else None
        acked = [t[1] for t in db.times([i for r in reqs if r.status == 202 for i in r.ids]).values() if t[1]]
        last_ack = max(acked) if acked else None
        during = sum(1 for at in arrivals if last_ack is not None and at <= last_ack)
        p3 = results.get("p3") or {}
        return {
            "status": batch.get("status", "failed"),
            "endpoints": len(endpoints),
            "batch": {k: v for k, v in batch.items() if k != "raw"},
            "events_expected": expected,
            "events_received": unique,
            "requests": len(arrivals),
            "duplicates": len(arrivals) - unique,
            "events_per_s": (unique / (arrivals[-1] - first_request)) if arrivals and first_request else 0.0,
            "events_per_s_during_batches": (
                during / (last_ack - first_request)
                if last_ack and first_request and last_ack > first_request
                else 0.0
            ),
            "last_event_after_last_ack_s": (arrivals[-1] - last_ack) if arrivals and last_ack else None,
            "delivered_per_s": batch.get("delivered_per_s"),
            "p3_delivered_per_s": p3.get("delivered_per_s"),
            "slowdown": (
                1 - batch["delivered_per_s"] / p3["delivered_per_s"]
                if p3.get("delivered_per_s") and batch.get("delivered_per_s")
                else None
            ),
        }
    finally:
        # Later phases measure the pipeline without webhooks.
        for api, endpoint_id in endpoints:
            with contextlib.suppress(OSError):
                api.request("DELETE", f"/api/v1/webhooks/{endpoint_id}/")
        receiver.stop()
