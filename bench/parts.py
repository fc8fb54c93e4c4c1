"""CPU per message of one part of the delivery path at a time, with the rest held still.

    python -m bench.parts worker [--messages 20000]          # the worker's chunk delivery
    python -m bench.parts web [--messages 20000] [--rate 2000] [--profile out.txt]

End to end (`make bench`) the parts share two cores with each other and with the clients, so a
change of a few percent in one part drowns in the run-to-run spread. These measure one part's
CPU per message directly, the way its own process spends it:

- `worker`: `messages_deliver_due` claiming chunks of 500 (a task's unit) in this process, for
  500 recipients recorded online in Redis (a private redis-server, so nothing subscribes): this
  process's CPU and its PostgreSQL backend's (from /proc) per message.
- `web`: one real daphne process with 500 real clients acking every frame (bench/clients.py);
  this process plays the worker (marks each chunk `sent` and publishes it, as
  `messages_write`), at `--rate` messages a second so that the web is busy but not saturated
  (saturated, it batches more and costs less per message). Daphne's CPU per message, until every
  ack is recorded. `--profile` samples daphne with py-spy meanwhile (raw stacks).

Both use the database `bench_parts` (dropped and recreated) and their own redis-server.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from bench.stack import configure_django, mobiles_create, recreate_database, senders_create
from tests.e2e.harness import BIN, REPO_ROOT, free_port

DATABASE = "bench_parts"
CHUNK = 500
RECIPIENTS = 500


def _redis_server() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    _wait_for(port, seconds=5)
    return proc, f"redis://127.0.0.1:{port}/0"


def _wait_for(port: int, *, seconds: float) -> None:
    """Wait until something accepts connections on 127.0.0.1:`port` (or `seconds` pass)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)


def _users() -> list:
    """Create the sender and RECIPIENTS mobile users; return the mobile users."""
    senders_create(1)
    return mobiles_create(0, RECIPIENTS)


def _stored(mobiles: list, count: int) -> list:
    """Store `count` one-way messages to `mobiles` in batches (they stay `queued`); return their ids."""
    from apps.accounts.models import User
    from apps.messaging import services

    sender = User.objects.get(username="bench-sender-0")
    ids = []
    for k in range(0, count, 1000):
        items = [
            {"recipient_phone_number": mobiles[j % RECIPIENTS].phone, "content": f"bench parts {k}-{j}"}
            for j in range(min(1000, count - k))
        ]
        ids += [m.pk for m in services.messages_send_batch(sender=sender, items=items)]
    return ids


def _backend_cpu_seconds() -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    return sum(psutil.Process(pid).cpu_times()[:2])


def worker_part(messages: int) -> dict:
    """Return the worker's and its PostgreSQL backend's CPU µs per message delivered in chunks."""
    from apps.accounts import presence
    from apps.accounts.party import Party
    from apps.common.logging import correlation_context
    from apps.messaging.models import Priority
    from apps.messaging.services.chunks import messages_deliver_due

    mobiles = _users()
    _stored(mobiles, messages)
    for m in mobiles:
        presence.connection_seen(party=Party.mobile(m.id), channel_name=f"bench.parts.{m.id}")
    cpu, backend, wall = time.process_time(), _backend_cpu_seconds(), time.perf_counter()
    n = 0
    while True:  # as workers drain the lane: claim a chunk, deliver it, until none is due
        with correlation_context(""):
            claimed = messages_deliver_due(priority=Priority.NORMAL, limit=CHUNK).claimed
        n += claimed
        if not claimed:
            break
    return {
        "messages": n,
        "worker_us": 1e6 * (time.process_time() - cpu) / n,
        "postgres_us": 1e6 * (_backend_cpu_seconds() - backend) / n,
        "wall_us": 1e6 * (time.perf_counter() - wall) / n,
    }


def web_part(messages: int, rate: float, profile: Path | None, redis_url: str) -> dict:
    """Return one daphne process's CPU µs per message written to acking clients and acked."""
    from apps.common.logging import correlation_context
    from apps.messaging import outgoing
    from apps.messaging.models import Message
    from apps.messaging.services.deliver import frames_encode, messages_write
    from bench.clients import FleetHandle, fleet_main

    mobiles = _users()
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_POOL": "true",
        "AUTH_TOKEN_CACHE_SECONDS": "10",
        "LOG_LEVEL": "WARNING",
        "REDIS_URL": redis_url,
    }
    web = subprocess.Popen(
        [str(BIN / "daphne"), "-p", str(port), "messaging_project.asgi:application"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    fleet_proc = spy = None
    try:
        _wait_for(port, seconds=30)
        parent, child = multiprocessing.get_context("spawn").Pipe()
        fleet_proc = multiprocessing.get_context("spawn").Process(
            target=fleet_main, args=(child, f"ws://127.0.0.1:{port}/ws/mobile/", "coalesce")
        )
        fleet_proc.start()
        fleet = FleetHandle(parent)
        connected = fleet.call("connect", tokens=[m.token for m in mobiles])
        # Stored once the clients are connected, or their catch-up would deliver them at once.
        ids = _stored(mobiles, messages)
        chunks = [
            outgoing.rows(Message.objects.filter(pk__in=ids[k : k + CHUNK]).order_by("recipient_id", "seq"))
            for k in range(0, len(ids), CHUNK)
        ]
        time.sleep(1)
        if profile is not None:
            record = ["record", "--pid", str(web.pid), "--rate", "200", "--format", "raw"]
            spy = subprocess.Popen(
                [str(BIN / "py-spy"), *record, "--output", str(profile), "--nonblocking"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
        daphne = psutil.Process(web.pid)
        cpu, started = sum(daphne.cpu_times()[:2]), time.perf_counter()
        for i, rows in enumerate(chunks):
            due = started + i * CHUNK / rate
            if time.perf_counter() < due:
                time.sleep(due - time.perf_counter())
            with correlation_context(""):
                messages_write(frames_encode(rows))
        delivered = 0
        while time.perf_counter() - started < 120:
            delivered = Message.objects.filter(pk__in=ids, delivered_at__isnull=False).count()
            if delivered >= len(ids):
                break
            time.sleep(0.05)
        spent = sum(daphne.cpu_times()[:2]) - cpu
        stats = fleet.call("stats")
        return {
            "messages": len(ids),
            "delivered": delivered,
            "connected": connected["connected"],
            "ack_frames": stats["acks_sent"],
            "seconds": time.perf_counter() - started,
            "daphne_us": 1e6 * spent / len(ids),
        }
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=30)
        if fleet_proc is not None:
            fleet_proc.terminate()
            fleet_proc.join(5)
        web.terminate()
        web.wait(timeout=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.parts", description=__doc__.split("\n", 1)[0])
    parser.add_argument("part", choices=("worker", "web"))
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2000, help="web: messages a second published")
    parser.add_argument("--profile", type=Path, help="web: py-spy raw stacks of daphne to this file")
    args = parser.parse_args(argv)
    os.chdir(REPO_ROOT)
    redis_proc, redis_url = _redis_server()
    try:
        recreate_database(DATABASE)
        os.environ["MESSAGING_RELAY_ON_COMMIT"] = "false"  # this process plays the relay itself
        configure_django(database_name=DATABASE, redis_url=redis_url)
        if args.part == "worker":
            result = worker_part(args.messages)
        else:
            result = web_part(args.messages, args.rate, args.profile, redis_url)
    finally:
        redis_proc.terminate()
    print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
