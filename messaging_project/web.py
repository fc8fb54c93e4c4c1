"""The `web` process: daphne serving the ASGI application, in one or more processes.

    python -m messaging_project.web [--bind 0.0.0.0] [--port $PORT] [--processes $WEB_CONCURRENCY]
                                    [--application module:attribute]

A daphne process runs Python on one core at most (the GIL), and a single send costs it about
9 ms of CPU. With `--processes N` (N > 1) this process binds the port once and starts N daphne
processes that accept on the same socket (`daphne --fd`), so the kernel spreads connections,
HTTP and WebSocket alike, over them. Every piece of state a connection needs lives in Redis or
PostgreSQL (presence, channel-layer groups, tickets), so any process serves any client. A child
that dies is started again; SIGTERM or SIGINT stops them all. With one process it simply
becomes daphne. `--application` serves another ASGI application the same way (the benchmark's
reference project, bench/reference/); the default is ours.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

APPLICATION = "messaging_project.asgi:application"
# The WebSocket frame limit, as settings.REALTIME_MAX_FRAME_BYTES (same variable, same default).
# The consumer answers a larger frame with a `frame_too_large` error. daphne gets a hard cap of a
# few times that, so that no frame is buffered past it; past it autobahn drops the connection
# (no close frame: the client sees 1006), so the cap stays above the limit that answers.
MAX_FRAME_BYTES_DEFAULT = 128 * 1024
HARD_CAP_FACTOR = 4
# A child that keeps dying is restarted at most this often.
RESTART_DELAY_SECONDS = 1.0


def _daphne() -> str:
    return os.path.join(os.path.dirname(sys.executable), "daphne")


def _frame_limits() -> list[str]:
    cap = str(HARD_CAP_FACTOR * int(os.environ.get("REALTIME_MAX_FRAME_BYTES", MAX_FRAME_BYTES_DEFAULT)))
    return ["--websocket-max-message-size", cap, "--websocket-max-frame-size", cap]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="messaging_project.web", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--processes", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")))
    parser.add_argument(
        "--application", default=APPLICATION, help=f"ASGI application (default {APPLICATION})"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.processes < 1:
        print("messaging_project.web: --processes must be at least 1", file=sys.stderr)
        return 2
    limits = _frame_limits()
    if args.processes == 1:
        os.execv(_daphne(), [_daphne(), "-b", args.bind, "-p", str(args.port), *limits, args.application])
    listener = socket.create_server((args.bind, args.port), backlog=2048, reuse_port=False)
    listener.set_inheritable(True)
    fd = listener.fileno()
    argv_child = [_daphne(), "--fd", str(fd), *limits, args.application]

    def spawn() -> subprocess.Popen:
        return subprocess.Popen(argv_child, pass_fds=[fd])

    stopping = False

    def stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    children = [spawn() for _ in range(args.processes)]
    print(f"web: {args.processes} daphne processes on {args.bind}:{args.port}", flush=True)
    last_restart = 0.0
    while not stopping:
        time.sleep(0.2)
        for i, child in enumerate(children):
            if child.poll() is None or stopping:
                continue
            wait = RESTART_DELAY_SECONDS - (time.monotonic() - last_restart)
            if wait > 0:
                time.sleep(wait)
            print(f"web: daphne {child.pid} exited with {child.returncode}; starting another", flush=True)
            children[i] = spawn()
            last_restart = time.monotonic()
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + 10
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
