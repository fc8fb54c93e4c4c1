"""The web launcher (messaging_project/web.py): several daphne processes on one socket."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from .harness import BIN, Api, Process, Stack, free_port, wait_until

pytestmark = pytest.mark.e2e


def _daphnes(launcher: Process) -> list[int]:
    """Return the pids of the launcher's daphne children (Linux /proc)."""
    pid = launcher.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"daphne" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_web_runs_its_processes_on_one_port_restarts_one_that_dies_and_stops_them_all(
    e2e_database_name, tmp_path
):
    stack = Stack(database_name=e2e_database_name, workdir=tmp_path)
    port = free_port()
    launcher = Process(
        "web",
        [str(BIN / "python"), "-m", "messaging_project.web", "--bind", "127.0.0.1", "--port", str(port)],
        env={**stack.env, "WEB_CONCURRENCY": "2"},
        log=tmp_path / "web.log",
    )
    api = Api(f"http://127.0.0.1:{port}")
    try:
        wait_until(lambda: len(_daphnes(launcher)) == 2, timeout=30, what="two daphne processes")
        wait_until(lambda: api.get("/health/live").status == 200, timeout=60, what="/health/live")
        first, second = _daphnes(launcher)

        os.kill(first, signal.SIGKILL)

        # The other process keeps serving while the launcher starts a replacement.
        assert all(api.get("/health/live").status == 200 for _ in range(5))
        wait_until(
            lambda: len(pids := set(_daphnes(launcher))) == 2 and first not in pids,
            timeout=30,
            what="a replacement daphne",
        )
        assert second in _daphnes(launcher)

        children = _daphnes(launcher)
        os.kill(launcher.pid, signal.SIGTERM)
        assert launcher.popen.wait(timeout=15) == 0
        assert not any(Path(f"/proc/{child}").exists() for child in children)
    finally:
        launcher.stop(grace=1)
