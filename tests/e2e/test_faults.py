"""Fault injection end to end: each test breaks one part of the running system and counts.

Every test gets processes of its own (two daphne processes, a Celery worker, Celery beat and a
private redis-server, tests/e2e/harness.py), breaks something while messages flow, and prints
a figure line `FAULT <name>: sent=N lost=N duplicated_to_app=N ...` (`pytest -s`):

- sent: messages the API answered 202 for;
- lost: of those, the ones not `delivered` (acked) at the end, or never seen by the app;
- duplicated_to_app: frames that arrived after the server had recorded their message's ack
  (SPEC.md section 2 forbids them; a redelivery of an unacked frame is allowed and counted as
  `redelivered`, the app deduplicates it by id).

The stacks run with the fast timings of the e2e suite (2 s ack timeout, sweeps every second)
but the spec's retry count (6), so that a fault of a few seconds exercises retries without
exhausting them; one test runs with the spec's 30 s ack timeout to show no frame waits for it.
"""

from __future__ import annotations

import time
import uuid

import pytest

from apps.devices.models import DeviceToken
from apps.media.models import Media, MediaStatus, MediaType
from apps.messaging.models import DeadLetter, Message, Status

from .faults import DELIVERED, App, Sender, figures
from .harness import Stack, wait_until

pytestmark = pytest.mark.e2e

FAULT_TIMINGS = {"MESSAGING_MAX_RETRIES": "6"}


def stack_env(env_fixture: str | None = None, **env: str):
    """Run the decorated test's stack with `env` (and the dict fixture `env_fixture` returns)."""

    def decorate(test):
        test.stack_env = (env, env_fixture)
        return test

    return decorate


@pytest.fixture
def stack(request, e2e_database_name, tmp_path_factory):
    stack = Stack(database_name=e2e_database_name, workdir=tmp_path_factory.mktemp("stack"))
    stack.env.update(FAULT_TIMINGS)
    env, env_fixture = getattr(request.function, "stack_env", ({}, None))
    stack.env.update(env)
    if env_fixture:
        stack.env.update(request.getfixturevalue(env_fixture))
    try:
        stack.start()
    except BaseException:
        stack.close()
        raise
    yield stack
    stack.close()


@pytest.fixture
def apps_():
    """The apps a test starts, stopped at teardown (before the tables are truncated)."""
    started: list[App] = []
    yield started
    for app in started:
        app.stop()


def _undelivered(ids: list[str]) -> int:
    return Message.objects.filter(pk__in=ids).exclude(status__in=DELIVERED).count()


def wait_all_delivered(stack: Stack, ids: list[str], *, timeout: float) -> None:
    stack.wait(
        lambda: _undelivered(ids) == 0,
        timeout=timeout,
        what=f"{len(ids)} messages to be delivered",
    )


# --- 1. the web process SIGKILLed ---------------------------------------------------------


def test_web_killed_with_clients_connected_they_reconnect_and_nothing_accepted_is_lost(e2e, apps_):
    stack = e2e.stack
    sender = e2e.sender()
    mobiles = [e2e.mobile() for _ in range(3)]
    apps_ += [App(stack, m.token) for m in mobiles]
    for app in apps_:
        app.wait_connected()
    senders = [Sender(sender.api, m.user.phone_number, interval=0.1).start() for m in mobiles]
    for app in apps_:
        stack.wait(lambda app=app: len(app.message_ids()) >= 3, timeout=20, what="deliveries before the kill")

    stack.kill_web()  # the supervisor and both daphne processes, at once: no disconnect() runs
    killed_at = time.monotonic()
    time.sleep(1)
    stack.start_web()
    restarted_in = time.monotonic() - killed_at
    for app in apps_:
        stack.wait(lambda app=app: len(app.sockets) >= 2, timeout=20, what="the app to reconnect")
        app.wait_connected()
    reconnected_in = time.monotonic() - killed_at
    time.sleep(2)  # more load on the new processes
    ids = [pk for s in senders for pk in s.stop()]
    refused = sum(s.refused for s in senders)

    for app, s in zip(apps_, senders, strict=True):
        app.wait_for_all(s.accepted, timeout=40)
    wait_all_delivered(stack, ids, timeout=30)
    result = figures(
        "web_sigkill",
        ids,
        apps_,
        refused=refused,
        restarted_in=restarted_in,
        reconnected_in=reconnected_in,
    )
    assert result["lost"] == 0
    assert result["duplicated_to_app"] == 0
    assert not Message.objects.filter(pk__in=ids, status=Status.FAILED).exists()
    # The seqs the apps saw are each recipient's 1..N: nothing skipped, nothing invented.
    for app, s in zip(apps_, senders, strict=True):
        assert sorted({a.seq for a in app.arrivals()}) == list(range(1, len(s.accepted) + 1))
