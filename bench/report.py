"""The benchmark's output: the figures table (against SPEC.md section 6), the plot, machine facts."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import psutil

# SPEC.md section 6.
DURABLE_PER_S = 5000
E2E_P99_MS = 100
BATCH_PER_S = 20_000
SINGLE_PER_S = 1000
SINGLE_P95_MS = 200
CATCHUP_S = 2
CATCHUP_COUNT = 10_000
IDLE_CONNECTIONS = 20_000


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: ""}[ok]


def figures(results: dict) -> list[dict]:
    """Return the table's rows: figure, value, target, ratio to the reference, verdict."""
    rows: list[dict] = []
    ref = results.get("reference", {})
    pg = ref.get("postgres", {}).get("rows_per_s")
    redis_ops = ref.get("redis", {}).get("ops_per_s")
    rtt_ms = ref.get("redis", {}).get("round_trip_ms")

    def add(
        figure: str, value: Any, unit: str = "", target: str = "", ok: bool | None = None, ratio: str = ""
    ):
        if isinstance(value, float):
            value = f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
        elif isinstance(value, int):
            value = f"{value:,}"
        elif value is None:
            value = "—"
        rows.append(
            {
                "figure": figure,
                "value": f"{value} {unit}".strip(),
                "target": target,
                "ratio": ratio,
                "verdict": _verdict(ok) if value != "—" else ("FAIL" if target else ""),
            }
        )

    def vs_pg(per_s: float | None) -> str:
        return f"{per_s / pg:.2f}x PG rows/s" if per_s and pg else ""

    def vs_redis(per_s: float | None) -> str:
        return f"{per_s / redis_ops:.3f}x Redis ops/s" if per_s and redis_ops else ""

    def in_rtts(ms: float | None) -> str:
        return f"{ms / rtt_ms:,.0f} Redis RTTs" if ms and rtt_ms else ""

    def not_run(name: str, label: str) -> bool:
        phase = results.get(name)
        if phase is None:
            return True
        status = phase.get("status")
        if status and status != "ok" and status != "incomplete":
            add(f"{label}", status + (f" — {phase.get('error', '')}" if phase.get("error") else ""))
            return True
        return False

    args = results.get("args", {})
    if not not_run("p1", "p1 fixed-rate single sends"):
        p1 = results["p1"]
        rate = args.get("rate")
        add(f"p1 offered rate ({args.get('rate_seconds'):g} s)", rate, "req/s")
        add("p1 accepted", p1["accepted_per_s"], "req/s", ratio=vs_redis(p1["accepted_per_s"]))
        if set(p1["statuses"]) - {"202"}:
            add("p1 answers other than 202 (-1: cancelled)", str(p1["statuses"]))
        add("p1 single-send API p50", p1["api_ms"]["p50"], "ms", ratio=in_rtts(p1["api_ms"]["p50"]))
        p95 = p1["api_ms"]["p95"]
        add(
            "p1 single-send API p95",
            p95,
            "ms",
            f"< {SINGLE_P95_MS} ms",
            p95 is not None and p95 < SINGLE_P95_MS,
            in_rtts(p95),
        )
        for p in ("p50", "p95", "p99"):
            add(f"p1 e2e request→frame {p}", p1["frame_ms"][p], "ms", ratio=in_rtts(p1["frame_ms"][p]))
        for p in ("p50", "p95"):
            add(f"p1 e2e request→ack recorded {p}", p1["e2e_ms"][p], "ms", ratio=in_rtts(p1["e2e_ms"][p]))
        p99 = p1["e2e_ms"]["p99"]
        add(
            f"p1 e2e request→ack recorded p99 (at {rate:g}/s)",
            p99,
            "ms",
            f"< {E2E_P99_MS} ms at {DURABLE_PER_S // 2:,}/s",
            p99 is not None and p99 < E2E_P99_MS and rate >= DURABLE_PER_S / 2,
            in_rtts(p99),
        )
        add("p1 delivered+acked", p1["delivered_per_s"], "msg/s", ratio=vs_pg(p1["delivered_per_s"]))
        add("p1 not acked after drain", p1["undelivered_after_drain"], "msg")
    if not not_run("p2", "p2 max-throughput single sends"):
        p2 = results["p2"]
        conc = args.get("max_concurrency")
        p95 = p2["api_ms"]["p95"]
        add(
            f"p2 single sends accepted (x{conc})",
            p2["accepted_per_s"],
            "req/s",
            f"≥ {SINGLE_PER_S:,} req/s",
            p2["accepted_per_s"] >= SINGLE_PER_S,
            vs_redis(p2["accepted_per_s"]),
        )
        add(
            f"p2 single-send API p95 (x{conc})",
            p95,
            "ms",
            f"< {SINGLE_P95_MS} ms",
            p95 is not None and p95 < SINGLE_P95_MS,
        )
        add(
            "p2 delivered+acked (durable e2e)",
            p2["delivered_per_s"],
            "msg/s",
            f"≥ {DURABLE_PER_S:,} msg/s",
            p2["delivered_per_s"] >= DURABLE_PER_S,
            vs_pg(p2["delivered_per_s"]),
        )
        add("p2 e2e request→ack recorded p99", p2["e2e_ms"]["p99"], "ms")
        add("p2 not acked after drain", p2["undelivered_after_drain"], "msg")
        if set(p2["statuses"]) - {"202"}:
            add("p2 answers other than 202", str(p2["statuses"]))
    if not not_run("p3", "p3 batches of 1,000"):
        p3 = results["p3"]
        for key, label in (("accepted_per_s", "accepted"), ("persisted_per_s", "persisted")):
            add(
                f"p3 batch ingest {label}",
                p3[key],
                "msg/s",
                f"≥ {BATCH_PER_S:,} msg/s",
                p3[key] >= BATCH_PER_S,
                vs_pg(p3[key]),
            )
        add("p3 batch API p95", p3["batch_api_ms"]["p95"], "ms")
        add(
            "p3 delivered+acked (durable e2e)",
            p3["delivered_per_s"],
            "msg/s",
            f"≥ {DURABLE_PER_S:,} msg/s",
            p3["delivered_per_s"] >= DURABLE_PER_S,
            vs_pg(p3["delivered_per_s"]),
        )
        add("p3 not acked after drain", p3["undelivered_after_drain"], "msg")
        if p3["status"] != "ok":
            add("p3 status", f"{p3['status']} {p3['statuses']} {p3['errors'][:1]}")
    if not not_run("p4", "p4 broadcast to all"):
        p4 = results["p4"]
        add(f"p4 broadcast API (audience {p4['audience_expected']:,})", p4["api_ms"], "ms")
        add(
            "p4 broadcast within the drain",
            f"{p4['stored']:,}/{p4['total'] or p4['audience_expected']:,} stored, {p4['delivered']:,} acked"
            f" by the {p4.get('online', p4['audience_expected']):,} connected clients"
            f" (status {p4['status']})",
        )
        add("p4 broadcast: every client has it", p4["all_frames_s"], "s")
        add("p4 broadcast: every ack recorded", p4["all_acked_s"], "s")
        add(
            "p4 broadcast delivered+acked",
            p4["delivered_per_s"],
            "msg/s",
            f"≥ {DURABLE_PER_S:,} msg/s",
            p4["delivered_per_s"] >= DURABLE_PER_S,
            vs_pg(p4["delivered_per_s"]),
        )
    if not not_run("p5", "p5 reconnect catch-up"):
        p5 = results["p5"]
        n = p5["pending"]
        frames_s = p5["all_frames_seconds"]
        add(
            f"p5 catch-up of {n:,}: all frames",
            frames_s,
            "s",
            f"< {CATCHUP_S} s for {CATCHUP_COUNT:,}",
            (frames_s is not None and frames_s < CATCHUP_S) if n >= CATCHUP_COUNT else None,
            f"{frames_s / (n / pg):.1f}x PG inserting {n:,} rows" if frames_s and pg else "",
        )
        add(f"p5 catch-up of {n:,}: all acks recorded", p5["all_acked_seconds"], "s")
        add("p5 catch-up frames in seq order", "yes" if p5["in_seq_order"] else "NO")
    for name in ("p5", "p1", "p2", "p3", "p4"):
        cores = (results.get(name) or {}).get("cpu_cores")
        if cores:
            busy = sorted(cores.items(), key=lambda kv: -kv[1])
            add(
                f"{name} CPU cores busy (of the phase, drain included)",
                " · ".join(f"{k} {v:.2f}" for k, v in busy),
            )
    peaks = results.get("memory_peak_mb", {})
    for name in ("web", "worker", "beat", "redis"):
        if name in peaks:
            add(f"p6 peak RSS {name}" + (" (with pool)" if name == "worker" else ""), peaks[name], "MB")
    connect = results.get("connect", {})
    if connect:
        fleet = results.get("fleet", {})
        closed = sum(fleet.get("closed_codes", {}).values())
        big_enough = args.get("clients", 0) >= IDLE_CONNECTIONS
        add(
            "WebSocket connections",
            f"{connect['connected']:,} open, {connect['failed']} failed, {closed} dropped",
            "",
            f"≥ {IDLE_CONNECTIONS:,} idle",
            (connect["connected"] >= IDLE_CONNECTIONS and not closed) if big_enough else None,
            "not measured at this size" if not big_enough else "",
        )
    add("push within 2 s of going offline (p99)", "not measured here", "", "< 2 s")
    rows[-1]["verdict"] = ""
    if pg:
        add("reference: PostgreSQL multi-row INSERT", pg, "rows/s")
    if redis_ops:
        add("reference: Redis LPUSH/BRPOP round trips", redis_ops, f"ops/s ({rtt_ms:.3f} ms each)")
    return rows


def render(rows: list[dict], results: dict) -> str:
    headers = {
        "figure": "figure",
        "value": "value",
        "target": "target (SPEC §6)",
        "ratio": "vs reference",
        "verdict": "",
    }
    widths = {k: max(len(headers[k]), *(len(r[k]) for r in rows)) for k in headers}
    line = "  ".join(headers[k].ljust(widths[k]) for k in headers).rstrip()
    out = [line, "-" * len(line)]
    out += ["  ".join(r[k].ljust(widths[k]) for k in headers).rstrip() for r in rows]
    m = results.get("machine", {})
    load = tuple(round(x, 2) for x in m.get("load_average_at_start", ()))
    out.append(
        f"({m.get('cpus')} CPUs, load average at start {load};"
        f" web processes {results.get('args', {}).get('web_processes', 1)};"
        f" worker concurrency {results.get('args', {}).get('worker_concurrency')};"
        f" acks {results.get('args', {}).get('ack_mode')})"
    )
    return "\n".join(out)


def plot(results: dict, timeline: list[tuple[float, float | None]], path: Path) -> None:
    """Write a 2x2 figure: latency CDFs, throughput over time, catch-up arrivals, memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    ax = axes[0][0]
    curves = (
        ("p1", "api_latency_s", "p1 API"),
        ("p1", "frame_latency_s", "p1 request→frame"),
        ("p1", "e2e_latency_s", "p1 request→ack recorded"),
        ("p2", "api_latency_s", "p2 API (max load)"),
        ("p2", "e2e_latency_s", "p2 request→ack recorded"),
    )
    for phase, key, label in curves:
        values = results.get(phase, {}).get("raw", {}).get(key)
        if values:
            xs = np.sort(np.array(values) * 1000)
            ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=f"{label} (n={len(xs):,})")
    ax.set_xscale("log")
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction ≤ x")
    ax.set_title("Latency CDF")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[0][1]
    if timeline:
        created = np.array([c for c, _ in timeline])
        delivered = np.array([d for _, d in timeline if d is not None])
        t0 = created.min()
        end = max(created.max(), delivered.max() if len(delivered) else 0) - t0 + 1
        bins = np.arange(0, end + 1, 1.0)
        ax.hist(created - t0, bins=bins, histtype="step", label="stored (created_at)")
        if len(delivered):
            ax.hist(delivered - t0, bins=bins, histtype="step", label="acked (delivered_at)")
        ax.set_xlabel("s since the first message")
        ax.set_ylabel("messages per second")
        ax.set_yscale("symlog", linthresh=10)
        ax.legend(fontsize=8)
    ax.set_title("Throughput over time (all phases)")
    ax.grid(True, alpha=0.3)

    ax = axes[1][0]
    arrivals = results.get("p5", {}).get("raw", {}).get("arrival_s")
    if arrivals:
        n = results["p5"]["pending"]
        step = n / len(arrivals)
        ax.plot(arrivals, np.arange(1, len(arrivals) + 1) * step)
        ax.axvline(CATCHUP_S, color="red", linestyle="--", label=f"target {CATCHUP_S} s")
        ax.legend(fontsize=8)
    ax.set_xlabel("s since connect")
    ax.set_ylabel("frames received")
    ax.set_title("Reconnect catch-up")
    ax.grid(True, alpha=0.3)

    ax = axes[1][1]
    memory = results.get("memory_timeline", [])
    if memory:
        t0 = memory[0][0]
        for name in memory[0][1]:
            ax.plot([t - t0 for t, _ in memory], [s[name] for _, s in memory], label=name)
        ax.legend(fontsize=8)
    ax.set_xlabel("s since start")
    ax.set_ylabel("RSS MB")
    ax.set_title("Resident memory")
    ax.grid(True, alpha=0.3)

    fig.suptitle(f"make bench {results.get('started_at', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
