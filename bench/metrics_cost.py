"""p13 of `make bench`: what recording the Prometheus metrics costs a single send.

Switching recording off in the processes and comparing two runs of p2 does not work on a 2-core
machine shared with the load generator: run-to-run noise (10-20 %) is far above the few percent
to detect. So the phase measures the two factors apart, in the same run:

1. What one send records, taken from the stack itself: a short closed loop of single sends
   (p2's, `--metrics-seconds`, delivered and acked by the fleet), with `/metrics` scraped before
   and after → values recorded per accepted send, by family; and the CPU seconds web, worker and
   beat (the processes that record) used over the same loop and its drain, per accepted send.
2. What each recording call costs, timed in this process, which runs in multiprocess mode like
   the stack (settings.test gives it a PROMETHEUS_MULTIPROC_DIR: the same mmap-backed values):
   the exact calls of a send's life, `metrics.http_request` (count and duration),
   `messages_accepted` and `messages_moved(to="delivered")` (count and delivery time), the last
   two behind `transaction.on_commit` as the code registers them.

Recording per send = calls per send times cost per call. It is an upper bound: the deltas count
values, and one coalesced ack records several deliveries in one call. The share is that figure
over the CPU per send; the target is "a few percent" (ISSUE 12), checked as < 3 %.
"""

from __future__ import annotations

import asyncio
import os
import time
import timeit
import urllib.request
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the timing below runs in `make test` too, where bench's packages are absent
    from bench.stack import BenchStack

SHARE_TARGET_PERCENT = 3.0
RECORDERS = ("web", "worker", "beat")
# Counter families (without _total) → the call that records them, timed below.
CALLS = {
    "messaging_http_requests": "http_request",
    "messaging_messages_accepted": "accepted",
    "messaging_messages_delivered": "delivered",
}
OTHER_COUNTERS = (
    "messaging_messages_read",
    "messaging_messages_failed",
    "messaging_push",
    "messaging_webhook_deliveries",
)


def scrape_totals(base_url: str) -> dict[str, float]:
    """Return every counter's total (summed over labels) and histogram count from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{base_url}/metrics", timeout=30) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_total", "_count")) and family.type in ("counter", "histogram"):
                totals[family.name] = totals.get(family.name, 0.0) + sample.value
    return totals


def call_costs_us(*, number: int = 20_000, repeat: int = 5) -> dict[str, float]:
    """Return µs per call of each recording call a single send makes (best of `repeat`)."""
    from django.db import transaction
    from prometheus_client import values

    from apps.common import metrics

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR") or values.ValueClass is values.MutexValue:
        raise RuntimeError("not in multiprocess mode: the figure would not be the processes' cost")
    accepted_at = [time.time()]  # epoch seconds, as lifecycle.transition hands them

    def http_request() -> None:
        metrics.http_request(view="messages", method="POST", status=202, seconds=0.004)

    def accepted() -> None:
        transaction.on_commit(lambda: metrics.messages_accepted(kind="one_way", priority="normal"))

    def delivered() -> None:
        transaction.on_commit(
            lambda: metrics.messages_moved(to="delivered", count=1, accepted_at=accepted_at)
        )

    def counter() -> None:
        metrics.push_sent(platform="android", outcome="sent")

    calls = {"http_request": http_request, "accepted": accepted, "delivered": delivered, "counter": counter}
    return {
        name: 1e6 * min(timeit.repeat(fn, number=number, repeat=repeat)) / number
        for name, fn in calls.items()
    }


def metrics_cost_phase(args, stack: BenchStack, load, db, fleet, ops: SimpleNamespace) -> dict:
    from bench.measure import CpuMeter  # psutil and pika: requirements/bench.txt

    assert stack.web and stack.worker and stack.beat
    costs = call_costs_us()
    meter = CpuMeter({"web": stack.web.pid, "worker": stack.worker.pid, "beat": stack.beat.pid})
    before = scrape_totals(stack.base_url)
    since = meter.reading()
    reqs = asyncio.run(
        ops.closed_loop(load, concurrency=args.max_concurrency, seconds=args.metrics_seconds, tag="p13")
    )
    out = ops.sends_summary(reqs, db, fleet, "p13", args.drain_seconds)
    # Let the last acks' on_commit recordings land before the second scrape.
    time.sleep(0.5)
    _wall, used = meter.seconds(since)
    after = scrape_totals(stack.base_url)
    accepted = out["accepted"]
    if not accepted:
        return {"status": "failed", "error": f"no send accepted: {out['statuses']}"}
    per_send = {
        name: (after.get(name, 0.0) - before.get(name, 0.0)) / accepted
        for name in (*CALLS, "messaging_delivery_seconds", *OTHER_COUNTERS)
    }
    recording_us = sum(per_send[name] * costs[call] for name, call in CALLS.items()) + sum(
        per_send[name] * costs["counter"] for name in OTHER_COUNTERS
    )
    cpu_ms = 1000 * sum(used.get(name, 0.0) for name in RECORDERS) / accepted
    share = 100 * (recording_us / 1000) / cpu_ms if cpu_ms else None
    print(
        f"p13 recording {recording_us:.1f} µs per send of {cpu_ms:.2f} ms CPU (web+worker+beat):"
        f" {share:.2f} %"
        if share is not None
        else "p13: no CPU measured"
    )
    return {
        "status": "ok" if out["undelivered_after_drain"] == 0 else "incomplete",
        "accepted": accepted,
        "accepted_per_s": out["accepted_per_s"],
        "delivered": out["delivered"],
        "undelivered_after_drain": out["undelivered_after_drain"],
        "recorded_per_send": {name: round(v, 3) for name, v in per_send.items()},
        "call_us": {name: round(v, 3) for name, v in costs.items()},
        "recording_us_per_send": round(recording_us, 2),
        "cpu_ms_per_send": round(cpu_ms, 3),
        "cpu_seconds_by_process": {name: round(used.get(name, 0.0), 3) for name in RECORDERS},
        "share_percent": round(share, 3) if share is not None else None,
        "target_percent": SHARE_TARGET_PERCENT,
    }
