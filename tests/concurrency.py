"""Run test code in real threads that start together, for races against PostgreSQL and Redis."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def run_together(*calls: Callable[[], Any]) -> list[Any]:
    """Run each call in its own thread, all released at once; return their results in order.

    Each thread uses (and then closes) its own database connection. An exception in any thread,
    a failed assertion included, fails the calling test.
    """
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = calls[index]()
        except BaseException as exc:  # noqa: BLE001 - reported by the calling thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return results
