"""The outbox relay: committed `queued` messages are claimed from the database and published once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.messaging import relay, services
from apps.messaging.models import Message, Priority, Status
from tests.concurrency import run_together
from tests.factories import MobileUserFactory
from tests.messaging.test_send import DELIVER_TASK, dispatched_ids, queued_tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def relay_only(settings):
    """No relay round after commit: only the relay under test publishes."""
    settings.MESSAGING_RELAY_ON_COMMIT = False


def _send(sender, recipient, **kwargs) -> Message:
    return services.message_send(
        sender=sender, recipient_phone_number=recipient.phone_number, content="hi", **kwargs
    )


def _wait_dispatched(redis, count: int, queue: str = "default", timeout: float = 5) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(ids := dispatched_ids(redis, queue)) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    return ids


def test_a_round_publishes_committed_queued_messages_once_each(sender, redis):
    users = MobileUserFactory.create_batch(5)
    messages = [_send(sender, u) for u in users]
    assert dispatched_ids(redis) == []  # a commit alone publishes nothing

    assert relay.relay_round() == 5
    assert relay.relay_round() == 0  # claimed: not again while the lease runs

    assert sorted(dispatched_ids(redis)) == sorted(str(m.pk) for m in messages)
    assert {name for name, _ in queued_tasks(redis)} == {DELIVER_TASK}
    assert set(Message.objects.values_list("status", flat=True)) == {Status.QUEUED}


def test_a_message_whose_transaction_has_not_committed_is_not_claimed(sender, mobile_user, redis):
    stored, release = threading.Event(), threading.Event()

    def send_and_hold() -> None:
        with transaction.atomic():
            _send(sender, mobile_user)
            stored.set()
            release.wait(5)
        connection.close()

    thread = threading.Thread(target=send_and_hold)
    thread.start()
    assert stored.wait(5)
    try:
        assert relay.relay_round() == 0
    finally:
        release.set()
        thread.join()
    assert relay.relay_round() == 1


def test_two_relays_at_once_claim_each_message_once(sender, redis):
    users = MobileUserFactory.create_batch(40)
    messages = [_send(sender, u) for u in users]

    counts = run_together(*[lambda: relay.relay_round(limit=7) for _ in range(4)])

    assert sum(counts) == 40
    ids = dispatched_ids(redis)
    assert sorted(ids) == sorted(str(m.pk) for m in messages)  # none twice, none missing


def test_a_claimed_message_whose_delivery_never_ran_is_claimed_again_after_its_lease(
    sender, mobile_user, redis, settings
):
    message = _send(sender, mobile_user)
    assert relay.relay_round() == 1
    redis.delete("default")  # the task is lost (a worker killed before it acked)

    assert relay.relay_round() == 0
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert relay.relay_round() == 1
    assert dispatched_ids(redis) == [str(message.pk)]


def test_broker_down_leaves_the_message_queued_and_the_next_lease_publishes_it(
    sender, mobile_user, redis, broker_down
):
    message = _send(sender, mobile_user)
    relay.relay_round()
    assert queued_tasks(redis) == []
    broker_down()  # the broker is back

    assert Message.objects.get(pk=message.pk).status == Status.QUEUED
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    assert relay.relay_round() == 1
    assert dispatched_ids(redis) == [str(message.pk)]


def test_each_priority_keeps_its_lane(sender, mobile_user, redis):
    normal = _send(sender, mobile_user)
    high = _send(sender, mobile_user, priority=Priority.HIGH)
    low = _send(sender, mobile_user, priority=Priority.LOW)

    relay.relay_round()

    assert dispatched_ids(redis, "high") == [str(high.pk)]
    assert dispatched_ids(redis, "default") == [str(normal.pk)]
    assert dispatched_ids(redis, "low") == [str(low.pk)]


def test_a_rolled_back_send_leaves_nothing_to_claim(sender, mobile_user, redis):
    with pytest.raises(RuntimeError), transaction.atomic():
        _send(sender, mobile_user)
        raise RuntimeError("rolled back")

    assert relay.relay_round() == 0
    assert queued_tasks(redis) == []


def test_the_relay_thread_is_woken_by_the_commit_not_by_its_poll(sender, mobile_user, redis, settings):
    settings.MESSAGING_RELAY_POLL_SECONDS = 30  # only a notification can wake it in time
    running = relay.Relay().start()
    try:
        time.sleep(0.3)  # listening
        started = time.monotonic()
        message = _send(sender, mobile_user)
        assert _wait_dispatched(redis, 1, timeout=3) == [str(message.pk)]
        assert time.monotonic() - started < 1
    finally:
        running.stop()


def test_a_requeued_dead_letter_wakes_the_relay(sender, mobile_user, redis, settings):
    message = _send(sender, mobile_user)
    relay.relay_round()
    redis.delete("default")
    services.messages_fail(Message.objects.filter(pk=message.pk), reason="test")
    settings.MESSAGING_RELAY_POLL_SECONDS = 30
    running = relay.Relay().start()
    try:
        time.sleep(0.3)
        services.dead_letters_requeue(dead_letters=message.dead_letter.__class__.objects.all())
        assert _wait_dispatched(redis, 1, timeout=3) == [str(message.pk)]
    finally:
        running.stop()


def test_a_lane_whose_broker_queue_is_not_empty_gathers_its_messages_until_the_workers_take_it(
    sender, redis, settings
):
    settings.MESSAGING_RELAY_POLL_SECONDS = 30
    redis.rpush("default", b"a task no worker took yet")
    users = MobileUserFactory.create_batch(6)
    running = relay.Relay().start()
    try:
        time.sleep(0.3)
        messages = [_send(sender, u) for u in users]
        high = _send(sender, users[0], priority=Priority.HIGH)
        assert _wait_dispatched(redis, 1, "high", timeout=3) == [str(high.pk)]  # its lane is free
        time.sleep(0.2)
        assert redis.llen("default") == 1  # held: the default lane's queue is not empty
        assert relay.lanes_with_room() == (Priority.LOW,)  # high holds its own chunk now

        redis.lpop("default")  # a worker takes the waiting task
        assert sorted(_wait_dispatched(redis, 6, timeout=3)) == sorted(str(m.pk) for m in messages)
        assert len(queued_tasks(redis)) == 1  # all six gathered into one chunk
    finally:
        running.stop()


def test_commits_within_the_gather_window_leave_together_and_the_first_leaves_at_once(
    sender, redis, settings
):
    settings.MESSAGING_RELAY_POLL_SECONDS = 30
    settings.MESSAGING_RELAY_GATHER_SECONDS = 0.5
    users = MobileUserFactory.create_batch(4)
    running = relay.Relay().start()
    try:
        time.sleep(0.6)  # listening, and the window of its first round is over
        started = time.monotonic()
        first = _send(sender, users[0])
        assert _wait_dispatched(redis, 1, timeout=3) == [str(first.pk)]
        assert time.monotonic() - started < 0.4  # a quiet system does not wait for the window

        redis.delete("default")  # a worker took it
        opened = time.monotonic()
        later = [_send(sender, u) for u in users[1:]]
        time.sleep(0.1)
        assert queued_tasks(redis) == []  # within the window: gathering
        assert sorted(_wait_dispatched(redis, 3, timeout=3)) == sorted(str(m.pk) for m in later)
        assert len(queued_tasks(redis)) == 1  # one round, one chunk
        assert time.monotonic() - opened < 1.0
    finally:
        running.stop()
