"""Coalesced dispatch: committed single sends leave as shared chunk tasks, each exactly once."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
from django.db import transaction

from apps.messaging import dispatch, services
from apps.messaging.models import Message, Priority, Status
from apps.ops.logging import correlation_context
from tests.concurrency import run_together
from tests.factories import MobileUserFactory
from tests.messaging.test_send import DELIVER_TASK, dispatched_ids, queued_tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def coalescing(settings):
    settings.MESSAGING_DISPATCH_COALESCE = True
    yield
    dispatch.dispatch_flush()


def _send(sender, recipient, **kwargs) -> Message:
    return services.message_send(
        sender=sender, recipient_phone_number=recipient.phone_number, content="hi", **kwargs
    )


def _wait_dispatched(redis, count: int, queue: str = "default") -> list[str]:
    deadline = time.monotonic() + 5
    while len(ids := dispatched_ids(redis, queue)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return ids


@pytest.fixture
def held_publisher(monkeypatch):
    """Hold the dispatcher's first publish until the test releases it; count every publish."""
    release, first_started = threading.Event(), threading.Event()
    calls: list[list] = []
    real = dispatch.messages_dispatch

    def publish(rows, **kwargs):
        calls.append(list(rows))
        if len(calls) == 1:
            first_started.set()
            release.wait(5)
        return real(rows, **kwargs)

    monkeypatch.setattr(dispatch, "messages_dispatch", publish)
    return release, first_started, calls


def test_a_committed_send_is_dispatched_by_the_background_thread_without_waiting(
    coalescing, sender, mobile_user, redis
):
    with transaction.atomic():
        message = _send(sender, mobile_user)
        assert dispatched_ids(redis) == []

    assert _wait_dispatched(redis, 1) == [str(message.pk)]


def test_sends_committed_during_a_publish_leave_together_in_the_next_round(
    coalescing, sender, redis, held_publisher
):
    release, first_started, calls = held_publisher
    users = MobileUserFactory.create_batch(20)
    first = _send(sender, users[0])
    assert first_started.wait(5)

    rest = run_together(*[lambda u=u: _send(sender, u) for u in users[1:]])
    release.set()

    ids = _wait_dispatched(redis, 20)
    assert sorted(ids) == sorted(str(m.pk) for m in [first, *rest])  # each exactly once
    assert [len(rows) for rows in calls] == [1, 19]
    assert len(queued_tasks(redis)) == 2


def test_each_priority_keeps_its_lane_when_coalesced(coalescing, sender, mobile_user, redis, held_publisher):
    release, first_started, _ = held_publisher
    first = _send(sender, mobile_user)
    assert first_started.wait(5)
    high = _send(sender, mobile_user, priority=Priority.HIGH)
    low = _send(sender, mobile_user, priority=Priority.LOW)
    release.set()

    assert _wait_dispatched(redis, 1, "high") == [str(high.pk)]
    assert _wait_dispatched(redis, 1, "low") == [str(low.pk)]
    assert _wait_dispatched(redis, 1, "default") == [str(first.pk)]


def test_a_round_of_one_request_keeps_its_correlation_id_and_a_shared_round_gets_its_own(
    coalescing, sender, mobile_user, redis, held_publisher
):
    release, first_started, _ = held_publisher
    with correlation_context("req-alone"):
        _send(sender, mobile_user)
    assert first_started.wait(5)
    for cid in ("req-a", "req-b"):
        with correlation_context(cid):
            _send(sender, mobile_user)
    release.set()
    _wait_dispatched(redis, 3)

    kwargs = []
    for raw in reversed(redis.lrange("default", 0, -1)):
        args, task_kwargs, _ = json.loads(base64.b64decode(json.loads(raw)["body"]))
        kwargs.append((len(args[0]), task_kwargs["correlation_id"]))
    assert kwargs[0] == (1, "req-alone")
    assert kwargs[1][0] == 2 and kwargs[1][1] not in ("req-a", "req-b", "")
    # Each message still carries its own request's id.
    assert set(Message.objects.values_list("correlation_id", flat=True)) == {"req-alone", "req-a", "req-b"}


def test_a_rolled_back_send_hands_nothing_to_the_dispatcher(coalescing, sender, mobile_user, redis):
    with pytest.raises(RuntimeError), transaction.atomic():
        _send(sender, mobile_user)
        raise RuntimeError("rolled back")

    assert dispatch.dispatch_flush() == 0
    assert queued_tasks(redis) == []


def test_broker_down_leaves_the_message_queued_for_the_sweep_and_the_dispatcher_keeps_working(
    coalescing, sender, mobile_user, redis, broker_down, settings
):
    lost = _send(sender, mobile_user)
    dispatch.dispatch_flush()  # returns once the round has been tried (and refused)
    assert queued_tasks(redis) == []
    broker_down()  # the broker is back

    later = _send(sender, mobile_user)
    assert _wait_dispatched(redis, 1) == [str(later.pk)]
    assert Message.objects.get(pk=lost.pk).status == Status.QUEUED
    # The lost one is the queued sweep's, once its dispatch deadline passes.
    Message.objects.filter(pk=lost.pk).update(next_attempt_at=lost.created_at)
    assert services.sweep_queued() == 1
    assert sorted(dispatched_ids(redis)) == sorted([str(later.pk), str(lost.pk)])
    assert {name for name, _ in queued_tasks(redis)} == {DELIVER_TASK}
