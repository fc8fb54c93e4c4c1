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
# Issue 10: batches delivered and acked at 5,000 msg/s, "about 0.6 of RabbitMQ here".
RABBITMQ_RATIO = 0.6


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
    rabbit = ref.get("rabbitmq", {})
    rabbit_rate = rabbit.get("delivered_per_s")

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

    def vs_rabbitmq(phase: str, per_s: float | None) -> None:
        """Add the row of a phase's delivered+acked as a ratio to RabbitMQ's (no verdict of its own)."""
        if not rabbit_rate:
            add(f"{phase} delivered+acked vs RabbitMQ", "RabbitMQ not measured")
            return
        add(
            f"{phase} delivered+acked vs RabbitMQ",
            f"{(per_s or 0) / rabbit_rate:.2f}x",
            "",
            f"about {RABBITMQ_RATIO}x (≥ {DURABLE_PER_S:,} msg/s)",
            None,
            f"{per_s or 0:,.0f} / {rabbit_rate:,.0f} msg/s",
        )

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
        vs_rabbitmq("p3", p3["delivered_per_s"])
        if "stages" in p3:
            stages = p3["stages"]
            add(
                "p3 stages p50/p95: stored→sent · sent→frame · frame→ack recorded",
                " · ".join(
                    f"{_whole_ms(stages[key]['p50'])}/{_whole_ms(stages[key]['p95'])}"
                    for key in ("stored_to_sent_ms", "sent_to_frame_ms", "frame_to_ack_recorded_ms")
                )
                + " ms",
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
        vs_rabbitmq("p4", p4["delivered_per_s"])
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
    _extra_rows(results, add, not_run)
    if not not_run("p13", "p13 cost of recording metrics"):
        p13 = results["p13"]
        per_send = p13["recorded_per_send"]
        calls = p13["call_us"]
        add(
            f"p13 metric values recorded per single send ({p13['accepted']:,} sends)",
            f"HTTP {per_send['messaging_http_requests']:.2f}"
            f" · accepted {per_send['messaging_messages_accepted']:.2f}"
            f" · delivered {per_send['messaging_messages_delivered']:.2f}"
            f" (timed {per_send['messaging_delivery_seconds']:.2f})",
        )
        add(
            "p13 cost per recording call (multiprocess mode)",
            f"HTTP {calls['http_request']:.1f} · accepted {calls['accepted']:.1f}"
            f" · delivered {calls['delivered']:.1f} · counter {calls['counter']:.1f}",
            "µs",
        )
        share = p13["share_percent"]
        add(
            "p13 metrics recording per send / CPU per send (web + worker + beat)",
            f"{p13['recording_us_per_send']:.1f} µs / {p13['cpu_ms_per_send']:.2f} ms = {share:.2f} %"
            if share is not None
            else None,
            "",
            f"< {p13['target_percent']:g} %",
            share is not None and share < p13["target_percent"],
        )
    for name in ("p5", "p1", "p2", "p3", "p4", "p8", "p9", "p11"):
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
            ("see p10" if results.get("p10") else "not measured at this size") if not big_enough else "",
        )
    if "p12" not in results:
        add("push within 2 s of going offline (p99)", "not measured here", "", "< 2 s")
        rows[-1]["verdict"] = ""
    elif not not_run("p12", "p12 push to offline users"):
        p12 = results["p12"]
        add(
            f"p12 first push to an offline user, send → FCM (p50 / p95, {p12['pushed']} of {p12['sent']})",
            f"{(p12['p50_s'] or 0) * 1000:,.0f} / {(p12['p95_s'] or 0) * 1000:,.0f} ms",
        )
        add(
            "p12 first push, send → FCM (p99 / max)",
            f"{(p12['p99_s'] or 0) * 1000:,.0f} / {(p12['max_s'] or 0) * 1000:,.0f} ms",
            "",
            "< 2 s",
            p12["pushed"] == p12["sent"] > 0 and (p12["p99_s"] or 99) < 2,
        )
    if pg:
        add("reference: PostgreSQL multi-row INSERT", pg, "rows/s")
    if redis_ops:
        add("reference: Redis LPUSH/BRPOP round trips", redis_ops, f"ops/s ({rtt_ms:.3f} ms each)")
    label = "reference: RabbitMQ durable publish+confirm → consume+ack"
    if rabbit_rate:
        cpu = rabbit["cpu_ms_per_message"]["rabbitmq"]
        add(
            label,
            rabbit_rate,
            f"msg/s ({rabbit['messages']:,} x {rabbit['body_bytes']} B, window {rabbit['window']:,},"
            f" prefetch {rabbit['prefetch']}, {rabbit['messages'] / max(rabbit['ack_frames'], 1):,.0f}/ack"
            + (f", broker {cpu:.3f} ms CPU/msg)" if cpu else ")"),
        )
    elif rabbit:
        add(label, f"not measured: {rabbit.get('not_measured', '?')}")
    return rows


REFERENCE_RATIO_P2 = 0.7
REFERENCE_RATIO_INGEST = 1.0
OVERLOAD_P95_MS = 1000
# Our processes that serve a single send end to end (the fleet and the load generator do not).
SERVER_SIDE = ("web", "worker", "beat", "redis", "postgres")


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _extra_rows(results: dict, add, not_run) -> None:
    """Rows of p7 (reference endpoint), p8 (ingest alone), p9 (overload), p10 (idle sockets)."""
    ref = None if not_run("p7", "p7 reference endpoint") else results["p7"]
    ref_rate = ref["accepted_per_s"] if ref else None

    def vs_ref(per_s: float | None) -> str:
        return f"{per_s / ref_rate:.2f}x reference" if per_s and ref_rate else ""

    if ref:
        add(
            f"p7 reference: bare DRF create (x{results['args'].get('max_concurrency')})",
            ref["accepted_per_s"],
            "req/s",
        )
        add("p7 reference API p50 / p95", f"{_ms(ref['api_ms']['p50'])} / {_ms(ref['api_ms']['p95'])}", "ms")
        cpu = ref["cpu_ms_per_request"]
        add(
            "p7 reference CPU per request (web + PostgreSQL)",
            f"{_ms(cpu['total'])} ms ({_ms(cpu['web'])} web, {_ms(cpu['postgres'])} PostgreSQL)",
        )
        if set(ref["statuses"]) - {"201"}:
            add("p7 reference answers other than 201", str(ref["statuses"]))
    p2 = results.get("p2")
    if p2 and "accepted_per_s" in p2:
        rate = p2["accepted_per_s"]
        ratio = rate / ref_rate if ref_rate else None
        add(
            "p2 single sends (delivered and acked) vs the reference",
            f"{ratio:.2f}x" if ratio is not None else None,
            "",
            f"≥ {REFERENCE_RATIO_P2}x",
            ratio is not None and ratio >= REFERENCE_RATIO_P2,
            f"{rate:,.0f} / {ref_rate:,.0f} req/s" if ref_rate else "reference not run",
        )
        used = p2.get("cpu_seconds")
        if used and p2.get("accepted"):
            n = p2["accepted"]
            total = sum(used.get(k, 0.0) for k in SERVER_SIDE)
            add(
                "p2 CPU per single send (all our processes + PostgreSQL, drain included)",
                f"{1000 * total / n:.1f} ms (web {1000 * used.get('web', 0) / n:.1f},"
                f" worker {1000 * used.get('worker', 0) / n:.1f},"
                f" PostgreSQL {1000 * used.get('postgres', 0) / n:.1f})",
                ratio=f"{total * 1000 / n / ref['cpu_ms_per_request']['total']:.1f}x reference"
                if ref and ref["cpu_ms_per_request"]["total"]
                else "",
            )
    if not not_run("p8", "p8 ingest alone"):
        p8 = results["p8"]
        rate = p8["accepted_per_s"]
        ratio = rate / ref_rate if ref_rate else None
        add(
            "p8 ingest alone (worker stopped): accepted",
            rate,
            "req/s",
            f"≥ {REFERENCE_RATIO_INGEST}x reference",
            ratio is not None and ratio >= REFERENCE_RATIO_INGEST,
            vs_ref(rate),
        )
        add("p8 ingest alone API p95", p8["api_ms"]["p95"], "ms")
        cpu = p8["cpu_ms_per_request"]
        ref_web = ref["cpu_ms_per_request"]["web"] if ref else None
        add(
            "p8 ingest alone web CPU per request",
            cpu["web"],
            "ms",
            ratio=f"{cpu['web'] / ref_web:.1f}x reference web" if cpu["web"] and ref_web else "",
        )
        add("p8 backlog not acked after SIGCONT + drain", p8["undelivered_after_drain"], "msg")
        if set(p8["statuses"]) - {"202"}:
            add("p8 answers other than 202", str(p8["statuses"]))
    if not not_run("p9", "p9 overload"):
        p9 = results["p9"]
        add(
            f"p9 overload offered ({p9['rate_source']}, {p9['seconds']:g} s,"
            f" ≤ {p9['connections']} in flight)",
            p9["offered_per_s"],
            "req/s",
        )
        add("p9 overload accepted", p9["accepted_per_s"], "req/s", ratio=vs_ref(p9["accepted_per_s"]))
        add("p9 overload accepted p50", p9["api_ms"]["p50"], "ms")
        p95 = p9["api_ms"]["p95"]
        add(
            "p9 overload accepted p95",
            p95,
            "ms",
            f"< {OVERLOAD_P95_MS:,} ms",
            p95 is not None and p95 < OVERLOAD_P95_MS,
        )
        add(
            "p9 overload 503 answers (with Retry-After)",
            f"{p9['unavailable_503']:,} ({p9['unavailable_with_retry_after']:,})",
            "",
            "503 + Retry-After when saturated",
            p9["unavailable_503"] > 0 and p9["unavailable_with_retry_after"] == p9["unavailable_503"],
        )
        add(
            "p9 overload other answers / cancelled",
            f"{p9['other_statuses'] or 'none'} / {p9['cancelled']:,} cancelled",
        )
        add(
            "p9 overload lost (accepted - delivered after drain)",
            f"{p9['lost']:,} of {p9['accepted']:,}",
            "",
            "0",
            p9["lost"] == 0,
        )
    if not not_run("p10", "p10 idle sockets"):
        p10 = results["p10"]
        add(
            f"p10 idle WebSockets on one web process (of {p10['requested']:,})",
            f"{p10['connected']:,} connected, {p10['failed']:,} failed in {p10['connect_seconds']:.1f} s",
            "",
            f"≥ {IDLE_CONNECTIONS:,} idle",
            p10["connected"] >= IDLE_CONNECTIONS,
        )
        if p10.get("errors"):
            add("p10 connect errors", str(p10["errors"])[:160])
        add(
            "p10 web RSS before → after",
            f"{p10['rss_before_mb']:.0f} → {p10['rss_after_mb']:.0f} MB,"
            f" {p10['kb_per_socket'] or 0:.1f} KB per socket",
        )
        add(
            "p10 pong from a random sample",
            f"{p10['pongs']}/{p10['sampled']}",
            "",
            "all",
            bool(p10["sampled"]) and p10["pongs"] == p10["sampled"],
        )
        add(
            "p10 RLIMIT_NOFILE server / client (soft)",
            f"{p10['server_rlimit_nofile']['soft']:,} / {p10['client_rlimit_nofile']['soft']:,}"
            + (f" — too low: {'; '.join(p10['rlimit_too_low'])}" if p10["rlimit_too_low"] else ""),
        )
    if not not_run("p11", "p11 webhooks during batches"):
        p11 = results["p11"]
        add(
            f"p11 webhook events received ({p11['endpoints']} endpoints, message.delivered)",
            f"{p11['events_received']:,} of {p11['events_expected']:,}, {p11['duplicates']:,} duplicates",
            "",
            "all",
            p11["events_received"] >= p11["events_expected"],
        )
        add("p11 webhook events/s (first batch sent → last event)", p11["events_per_s"], "evt/s")
        add(
            "p11 webhook events/s while the batches were delivered",
            p11["events_per_s_during_batches"],
            "evt/s",
        )
        add("p11 last event after the last ack", p11["last_event_after_last_ack_s"], "s")
        slowdown = p11.get("slowdown")
        add(
            "p11 batch delivered+acked with webhooks (p3 without)",
            f"{p11['delivered_per_s'] or 0:,.0f} vs {p11['p3_delivered_per_s'] or 0:,.0f} msg/s",
            ratio=f"{1 - slowdown:.2f}x p3's" if slowdown is not None else "",
        )


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
        ("p7", "api_latency_s", "p7 reference API (bare DRF)"),
        ("p8", "api_latency_s", "p8 API, worker stopped"),
        ("p9", "api_latency_s", "p9 API accepted under overload"),
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


def _whole_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"
