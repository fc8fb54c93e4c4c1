"""The per-host directory where every process writes its Prometheus samples (multiprocess mode).

prometheus-client picks its value class when it is first imported: PROMETHEUS_MULTIPROC_DIR
must be in the environment before that, so the settings call `metrics_directory_use` and this
module imports prometheus_client only once the variable is set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"
# counter_123.db, histogram_123.db, gauge_livesum_123.db, gauge_mostrecent_123.db, ...
_FILE = re.compile(r"^(?P<kind>[a-z]+(?:_[a-z]+)?)_(?P<pid>\d+)\.db$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _files(directory: Path) -> list[tuple[Path, str, int]]:
    found = []
    for path in directory.glob("*.db"):
        match = _FILE.match(path.name)
        if match:
            found.append((path, match["kind"], int(match["pid"])))
    return found


def stale_files_clear(directory: Path) -> None:
    """Remove what processes that are gone left behind, without losing a live total.

    When no process that wrote here is alive, the files are a previous run's: all go (the
    counters restart at zero, which Prometheus reads as a reset). Otherwise only the live-mode
    gauges of dead processes go (mark_process_dead): a dead worker's counters must stay, or the
    host's sums would drop.
    """
    files = _files(directory)
    pids = {pid for _, _, pid in files}
    if pids and not any(_alive(pid) for pid in pids if pid != os.getpid()):
        for path, _, pid in files:
            if pid != os.getpid():
                path.unlink(missing_ok=True)
        return
    dead_processes_mark(directory)


def dead_processes_mark(directory: Path) -> None:
    """Drop the live-mode gauges (connections) of processes that died without saying so."""
    from prometheus_client import multiprocess

    for pid in {pid for _, kind, pid in _files(directory) if kind.startswith("gauge_live")}:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, str(directory))


def process_exit_mark() -> None:
    """Remove this process's live-mode gauges (called at exit; the pid is read then, after forks)."""
    directory = os.environ.get(ENV)
    if directory and Path(directory).is_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), directory)


def metrics_directory_use(directory: str | Path) -> str:
    """Make `directory` this process's PROMETHEUS_MULTIPROC_DIR, created and cleared of stale files.

    Raise RuntimeError if prometheus_client was imported before: its samples would then stay
    in this process only and never reach /metrics.
    """
    import atexit
    import sys

    path = Path(directory).resolve()
    current = os.environ.get(ENV)
    if "prometheus_client" in sys.modules and current != str(path):
        raise RuntimeError(f"prometheus_client was imported before {ENV} was set to {path}")
    path.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(path)
    stale_files_clear(path)
    atexit.register(process_exit_mark)
    return str(path)
