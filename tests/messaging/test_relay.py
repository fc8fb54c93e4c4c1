"""The outbox relay and the workers' claim: committed `queued` messages leave once each, from the database."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from apps.messaging import relay, services
from apps.messaging.models import Message, Priority, Status
from tests.concurrency import run_together
from tests.factories import MobileUserFactory
from tests.messaging.test_send import DUE_TASK, dispatched_ids, queued_tasks

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


def _claim(priority: str = Priority.NORMAL, **kwargs) -> list[str]:
    """Run a worker's `deliver_due` for the lane (its recipients are offline); return what it took."""
    before = set(Message.objects.filter(status=Status.QUEUED).values_list("pk", flat=True))
    report = services.messages_deliver_due(priority=priority, **kwargs)
    after = set(Message.objects.filter(status=Status.QUEUED).values_list("pk", flat=True))
    assert report.claimed == len(before - after)
    return sorted(str(pk) for pk in before - after)


def test_a_round_asks_for_a_task_on_the_lane_and_the_worker_claims_each_message_once(sender, redis):
    users = MobileUserFactory.create_batch(5)
    messages = [_send(sender, u) for u in users]
    assert queued_tasks(redis) == []  # a commit alone publishes nothing

    assert relay.relay_round() == 1  # one task for the lane, however many messages
    assert queued_tasks(redis) == [(DUE_TASK, [Priority.NORMAL])]
    assert set(Message.objects.values_list("status", flat=True)) == {Status.QUEUED}  # nothing written

    assert _claim() == sorted(str(m.pk) for m in messages)
    assert _claim() == []  # claimed: never twice
    assert relay.relay_round() == 0  # and nothing is due any more
    assert set(Message.objects.values_list("status", flat=True)) == {Status.PENDING}  # all offline


def test_a_message_whose_transaction_has_not_committed_is_neither_announced_nor_claimed(
    sender, mobile_user, redis
):
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
        assert _claim() == []
    finally:
        release.set()
        thread.join()
    assert relay.relay_round() == 1
    assert len(_claim()) == 1


def test_workers_claiming_at_once_take_each_message_once(sender, redis):
    users = MobileUserFactory.create_batch(40)
    messages = [_send(sender, u) for u in users]

    def drain() -> list[str]:
        taken = []
        while report := services.messages_deliver_due(priority=Priority.NORMAL, limit=7):
            if not report.claimed:
                return taken
            taken.append(report.claimed)
        return taken

    counts = run_together(*[drain for _ in range(4)])

    assert sum(sum(c) for c in counts) == 40  # none twice, none missing
    assert set(Message.objects.values_list("status", flat=True)) == {Status.PENDING}
    # Each message was decided once: one attempt each (recipient offline).
    assert sorted(m.attempts.count() for m in Message.objects.all()) == [1] * len(messages)


def test_a_claim_skips_the_rows_another_delivery_holds_instead_of_waiting(sender, redis):
    first, second = (_send(sender, u) for u in MobileUserFactory.create_batch(2))
    held, release = threading.Event(), threading.Event()

    def hold_first() -> None:
        with transaction.atomic():
            list(Message.objects.select_for_update().filter(pk=first.pk))
            held.set()
            release.wait(5)
        connection.close()

    thread = threading.Thread(target=hold_first)
    thread.start()
    assert held.wait(5)
    try:
        started = time.monotonic()
        assert _claim() == [str(second.pk)]
        assert time.monotonic() - started < 1
    finally:
        release.set()
        thread.join()
    assert _claim() == [str(first.pk)]  # free again, and still due


def test_a_full_chunk_asks_for_the_next_task_at_once_and_the_last_short_one_does_not(sender, redis):
    recipient = MobileUserFactory()
    messages = [_send(sender, recipient) for _ in range(5)]
    by_seq = [str(m.pk) for m in sorted(messages, key=lambda m: m.seq)]

    def due_tasks() -> int:
        return sum(name == DUE_TASK for name, _ in queued_tasks(redis))

    assert _claim(limit=2) == sorted(by_seq[:2])  # the oldest first
    assert due_tasks() == 1  # another worker may take the rest meanwhile
    assert _claim(limit=2) == sorted(by_seq[2:4])
    assert due_tasks() == 2
    assert _claim(limit=2) == [by_seq[4]]
    assert due_tasks() == 2  # the short chunk was the lane's last


def test_a_lost_task_leaves_its_messages_due_and_the_next_round_asks_again(sender, mobile_user, redis):
    message = _send(sender, mobile_user)
    assert relay.relay_round() == 1
    redis.delete("default")  # the task is lost (a broker that lost it, a queue purged)

    assert Message.objects.get(pk=message.pk).status == Status.QUEUED
    assert relay.relay_round() == 1
    assert dispatched_ids(redis) == [str(message.pk)]


def test_broker_down_leaves_the_message_queued_and_the_next_round_publishes_it(
    sender, mobile_user, redis, broker_down
):
    message = _send(sender, mobile_user)
    assert relay.relay_round() == 0
    assert queued_tasks(redis) == []
    broker_down()  # the broker is back

    assert Message.objects.get(pk=message.pk).status == Status.QUEUED
    assert relay.relay_round() == 1
    assert dispatched_ids(redis) == [str(message.pk)]


def test_each_priority_keeps_its_lane(sender, mobile_user, redis):
    normal = _send(sender, mobile_user)
    high = _send(sender, mobile_user, priority=Priority.HIGH)
    low = _send(sender, mobile_user, priority=Priority.LOW)

    assert relay.relay_round() == 3

    assert dispatched_ids(redis, "high") == [str(high.pk)]
    assert dispatched_ids(redis, "default") == [str(normal.pk)]
    assert dispatched_ids(redis, "low") == [str(low.pk)]
    assert _claim(Priority.HIGH) == [str(high.pk)]  # a lane's worker takes only its lane's messages
    assert _claim(Priority.LOW) == [str(low.pk)]


def test_a_rolled_back_send_leaves_nothing_to_claim(sender, mobile_user, redis):
    with pytest.raises(RuntimeError), transaction.atomic():
        _send(sender, mobile_user)
        raise RuntimeError("rolled back")

    assert relay.relay_round() == 0
    assert _claim() == []
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
        assert len(queued_tasks(redis)) == 1
        assert _claim() == sorted(str(m.pk) for m in messages)  # all six gathered into one chunk
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

        redis.delete("default")  # a worker took the task
        assert _claim() == [str(first.pk)]
        redis.delete("default")  # (with the push it asked for: the recipient is offline)
        opened = time.monotonic()
        later = [_send(sender, u) for u in users[1:]]
        time.sleep(0.1)
        assert queued_tasks(redis) == []  # within the window: gathering
        assert sorted(_wait_dispatched(redis, 3, timeout=3)) == sorted(str(m.pk) for m in later)
        assert len(queued_tasks(redis)) == 1  # one round, one task
        assert _claim() == sorted(str(m.pk) for m in later)  # one chunk
        assert time.monotonic() - opened < 1.0
    finally:
        running.stop()
