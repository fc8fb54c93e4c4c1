"""Readiness checks of each dependency, each bounded in time."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.files.storage import default_storage
from django.db import connection

from apps.common import breaker, metrics
from apps.common.redis import redis_client
from messaging_project.celery import app as celery_app


def check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def check_redis() -> None:
    redis_client().ping()


def check_broker() -> None:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)


def check_channel_layer() -> None:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer configured")

    async def round_trip() -> None:
        channel = await layer.new_channel("health.")
        token = uuid.uuid4().hex
        await layer.send(channel, {"type": "health.check", "token": token})
        received = await layer.receive(channel)
        if received.get("token") != token:
            raise RuntimeError("channel layer returned another message")

    async_to_sync(round_trip)()


def check_storage() -> None:
    default_storage.exists("health-check-probe")


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "redis": check_redis,
    "broker": check_broker,
    "channel_layer": check_channel_layer,
    "storage": check_storage,
}


def run_checks() -> dict[str, str]:
    """Return each check's result: "ok" or the error that made it fail; record it as a gauge."""
    results = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - a failing dependency is reported, not raised
            results[name] = f"failed: {exc.__class__.__name__}: {exc}"[:300]
        else:
            results[name] = "ok"
        metrics.dependency_up(name, results[name] == "ok")
    return results


def breaker_states() -> dict[str, str]:
    """Return each circuit breaker's shared state (closed, open, half_open, or unknown); record it.

    A process records a breaker's state whenever it uses the breaker, but a breaker nobody has
    used since the process started, or one that has since closed elsewhere, would otherwise be
    missing from /metrics or stale there: the shared state is the truth (unknown leaves the
    last recorded value).
    """
    states = breaker.states()
    for name, state in states.items():
        if state != "unknown":
            metrics.breaker_state(name, state != breaker.CLOSED)
    return states
