"""Periodic sweeps: ack timeouts and retries, expiry, stale connections, stuck `queued`,
dead-letter requeue, idempotency-key purge. Each is idempotent and safe on two beats."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from apps.accounts import presence
from apps.accounts.party import Party
from apps.conversations.services import conversation_message_send
from apps.messaging import relay, services
from apps.messaging.models import (
    Channel,
    DeadLetter,
    DeliveryAttempt,
    IdempotencyKey,
    Message,
    Outcome,
    Priority,
    Status,
)
from tests.concurrency import run_together
from tests.factories import ConversationFactory, MessageFactory, MobileUserFactory, SenderFactory
from tests.messaging.test_send import dispatched_ids, queued_tasks

BACKLOG_TASK = "apps.messaging.tasks.deliver_backlog"


def _past(seconds: float = 1) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def _sent(sender, recipient, **kwargs) -> Message:
    """A `sent` message with its open websocket attempt, as messages_mark_sent leaves it."""
    kwargs.setdefault("next_attempt_at", _past())
    message = MessageFactory(
        sender=sender, recipient=recipient, status=Status.SENT, sent_at=_past(30), **kwargs
    )
    DeliveryAttempt.objects.create(
        message=message, at=_past(30), channel=Channel.WEBSOCKET, outcome=Outcome.SENT
    )
    return message


def _row(message: Message) -> dict:
    return Message.objects.filter(pk=message.pk).values().get()


def _rows() -> dict:
    return {row["id"]: row for row in Message.objects.values()}


# --- ack timeouts ---------------------------------------------------------------------------


def test_ack_timeout_makes_message_pending_with_backoff(sender, mobile_user):
    message = _sent(sender, mobile_user)
    before = timezone.now()

    assert services.sweep_ack_timeouts() == 1

    message.refresh_from_db()
    assert (message.status, message.retry_count) == (Status.PENDING, 1)
    # First retry: 1 s, jittered into [0.5 s, 1 s].
    assert before + timedelta(seconds=0.5) <= message.next_attempt_at <= timezone.now() + timedelta(seconds=1)
    assert list(DeliveryAttempt.objects.filter(message=message).values_list("outcome", flat=True)) == [
        Outcome.TIMEOUT
    ]
    assert not DeadLetter.objects.exists()


@pytest.mark.parametrize(("retry_count", "delay"), [(1, 2), (3, 8), (5, 32)])
def test_ack_timeout_backoff_window_grows_with_retries(retry_count, delay, sender, mobile_user):
    message = _sent(sender, mobile_user, retry_count=retry_count)
    before = timezone.now()

    services.sweep_ack_timeouts()

    message.refresh_from_db()
    assert message.retry_count == retry_count + 1
    low, high = before + timedelta(seconds=delay / 2), timezone.now() + timedelta(seconds=delay)
    assert low <= message.next_attempt_at <= high


def test_ack_timeout_leaves_messages_not_yet_due_alone(sender, mobile_user):
    waiting = _sent(sender, mobile_user, next_attempt_at=timezone.now() + timedelta(seconds=30))
    delivered = MessageFactory(
        sender=sender, recipient=mobile_user, status=Status.DELIVERED, next_attempt_at=_past()
    )
    before = _rows()

    assert services.sweep_ack_timeouts() == 0

    assert _rows() == before
    assert {waiting.pk, delivered.pk} == set(before)


def test_ack_timeout_sweep_twice_changes_nothing_the_second_time(sender, mobile_user):
    _sent(sender, mobile_user)
    _sent(sender, mobile_user, retry_count=6)
    assert services.sweep_ack_timeouts() == 2
    before = _rows()
    attempts = list(DeliveryAttempt.objects.values_list("id", "outcome"))

    assert services.sweep_ack_timeouts() == 0

    assert _rows() == before
    assert list(DeliveryAttempt.objects.values_list("id", "outcome")) == attempts
    assert DeadLetter.objects.count() == 1


def test_exhausted_retries_fail_with_exactly_one_dead_letter(sender, mobile_user, settings):
    message = _sent(sender, mobile_user, retry_count=settings.MESSAGING_MAX_RETRIES, content="payload text")

    assert services.sweep_ack_timeouts() == 1
    assert services.sweep_ack_timeouts() == 0

    message.refresh_from_db()
    assert message.status == Status.FAILED
    assert message.failed_at is not None
    assert message.next_attempt_at is None
    assert "no ack" in message.failure_reason
    [dead] = DeadLetter.objects.all()
    assert dead.message_id == message.pk
    assert dead.reason == message.failure_reason
    assert dead.payload["id"] == str(message.pk)
    assert dead.payload["seq"] == message.seq
    assert dead.payload["content"] == "payload text"
    assert dead.payload["recipient_phone_number"] == mobile_user.phone_number
    assert list(DeliveryAttempt.objects.filter(message=message).values_list("outcome", flat=True)) == [
        Outcome.TIMEOUT
    ]


def test_message_is_sent_seven_times_then_dead_lettered(sender, mobile_user, settings):
    """One first attempt and MESSAGING_MAX_RETRIES (6) retries, each timing out."""
    settings.MESSAGING_ACK_TIMEOUT_SECONDS = 0
    message = MessageFactory(sender=sender, recipient=mobile_user)
    sends = 0
    while Message.objects.get(pk=message.pk).status != Status.FAILED:
        assert services.messages_mark_sent([message.pk]) == {message.pk}
        sends += 1
        assert services.sweep_ack_timeouts() == 1
        assert sends <= 10

    message.refresh_from_db()
    assert sends == 7
    assert message.retry_count == 6
    assert DeadLetter.objects.filter(message=message).count() == 1
    assert DeliveryAttempt.objects.filter(message=message, outcome=Outcome.TIMEOUT).count() == 7
    assert not DeliveryAttempt.objects.filter(message=message, outcome=Outcome.SENT).exists()


def test_ack_racing_the_timeout_wins_when_first(sender, mobile_user):
    message = _sent(sender, mobile_user)
    services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=[message.pk])

    assert services.sweep_ack_timeouts() == 0

    message.refresh_from_db()
    assert (message.status, message.retry_count) == (Status.DELIVERED, 0)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_ack_timeout_sweeps_never_double_count(redis, settings):
    sender, recipient = SenderFactory(), MobileUserFactory()
    retrying = [_sent(sender, recipient) for _ in range(30)]
    exhausted = [_sent(sender, recipient, retry_count=settings.MESSAGING_MAX_RETRIES) for _ in range(10)]

    results = run_together(services.sweep_ack_timeouts, services.sweep_ack_timeouts)

    assert sum(results) == 40
    assert set(
        Message.objects.filter(pk__in=[m.pk for m in retrying]).values_list("status", "retry_count")
    ) == {(Status.PENDING, 1)}
    assert set(Message.objects.filter(pk__in=[m.pk for m in exhausted]).values_list("status", flat=True)) == {
        Status.FAILED
    }
    assert DeadLetter.objects.count() == 10
    assert set(DeadLetter.objects.values_list("message_id", flat=True)) == {m.pk for m in exhausted}
    # Each retry is dispatched exactly once, after the sweep committed.
    assert sorted(dispatched_ids(redis)) == sorted(str(m.pk) for m in retrying)


# --- expiry ---------------------------------------------------------------------------------


def test_expired_undelivered_messages_fail_with_dead_letter(sender, mobile_user):
    expired = [
        MessageFactory(sender=sender, recipient=mobile_user, status=status, ttl_seconds=5, expires_at=_past())
        for status in (Status.QUEUED, Status.PENDING, Status.SENT)
    ]
    fresh = MessageFactory(
        sender=sender, recipient=mobile_user, ttl_seconds=60, expires_at=timezone.now() + timedelta(minutes=1)
    )
    delivered = MessageFactory(
        sender=sender, recipient=mobile_user, status=Status.DELIVERED, ttl_seconds=5, expires_at=_past()
    )

    assert services.sweep_expired() == 3

    for message in expired:
        message.refresh_from_db()
        assert (message.status, message.failure_reason) == (Status.FAILED, "expired")
        assert message.failed_at is not None
        assert message.dead_letter.reason == "expired"
    assert Message.objects.get(pk=fresh.pk).status == Status.QUEUED
    assert Message.objects.get(pk=delivered.pk).status == Status.DELIVERED
    assert DeadLetter.objects.count() == 3


def test_expiry_sweep_twice_changes_nothing_the_second_time(sender, mobile_user):
    MessageFactory(
        sender=sender, recipient=mobile_user, status=Status.PENDING, ttl_seconds=5, expires_at=_past()
    )
    services.sweep_expired()
    before = _rows()

    assert services.sweep_expired() == 0

    assert _rows() == before
    assert DeadLetter.objects.count() == 1


# --- stale connections ----------------------------------------------------------------------


def test_stale_connection_sweep_releases_only_users_without_live_connection(sender, redis, settings):
    old = time.time() - settings.PRESENCE_STALE_SECONDS - 5
    gone, alive, reconnected = MobileUserFactory(), MobileUserFactory(), MobileUserFactory()
    presence.connection_seen(party=Party.mobile(gone.pk), channel_name="gone-1", now=old)
    presence.connection_seen(party=Party.mobile(alive.pk), channel_name="alive-1")
    presence.connection_seen(party=Party.mobile(reconnected.pk), channel_name="reconnected-old", now=old)
    presence.connection_seen(party=Party.mobile(reconnected.pk), channel_name="reconnected-new")
    lost = _sent(sender, gone, next_attempt_at=timezone.now() + timedelta(seconds=30))
    gone_delivered = MessageFactory(sender=sender, recipient=gone, status=Status.DELIVERED)
    kept = [
        _sent(sender, u, next_attempt_at=timezone.now() + timedelta(seconds=30)) for u in (alive, reconnected)
    ]

    assert services.sweep_stale_connections() == 1

    lost.refresh_from_db()
    assert (lost.status, lost.next_attempt_at, lost.retry_count) == (Status.PENDING, None, 0)
    assert list(DeliveryAttempt.objects.filter(message=lost).values_list("outcome", flat=True)) == [
        Outcome.OFFLINE
    ]
    assert Message.objects.get(pk=gone_delivered.pk).status == Status.DELIVERED
    assert {Message.objects.get(pk=m.pk).status for m in kept} == {Status.SENT}

    before = _rows()
    assert services.sweep_stale_connections() == 0
    assert _rows() == before


def test_stale_connection_sweep_tells_a_business_user_from_the_mobile_user_with_its_id(db, redis, settings):
    old = time.time() - settings.PRESENCE_STALE_SECONDS - 5
    twin, customer = MobileUserFactory(), MobileUserFactory()
    desk = SenderFactory(pk=twin.pk)  # the same id in the other id space
    presence.connection_seen(party=Party.of(desk), channel_name="desk-1", now=old)
    presence.connection_seen(party=Party.of(twin), channel_name="twin-1")
    question = conversation_message_send(
        conversation_id=ConversationFactory(business=desk, mobile=customer).pk, author=customer, content="?"
    )
    services.messages_mark_sent([question.pk])
    to_twin = _sent(desk, twin, next_attempt_at=timezone.now() + timedelta(seconds=30))

    assert services.sweep_stale_connections() == 1

    assert Message.objects.get(pk=question.pk).status == Status.PENDING
    assert Message.objects.get(pk=to_twin.pk).status == Status.SENT  # its mobile twin is still online


def test_stale_connection_sweep_drops_old_records(mobile_user, redis, settings):
    ancient = time.time() - settings.PRESENCE_RECORD_TTL_SECONDS - 5
    presence.connection_seen(party=Party.mobile(mobile_user.pk), channel_name="ancient", now=ancient)

    services.sweep_stale_connections()

    assert redis.zcard(presence.CONNECTIONS) == 0
    assert not presence.is_online(Party.mobile(mobile_user.pk))


# --- pending ----------------------------------------------------------------------------------


def test_pending_sweep_dispatches_backlog_only_for_online_recipients_with_due_messages(sender, redis):
    due_online, offline, waiting_online = MobileUserFactory(), MobileUserFactory(), MobileUserFactory()
    for user in (due_online, waiting_online):
        presence.connection_seen(party=Party.mobile(user.pk), channel_name=f"socket-{user.pk}")
    MessageFactory(sender=sender, recipient=due_online, status=Status.PENDING, next_attempt_at=None)
    MessageFactory(sender=sender, recipient=due_online, status=Status.PENDING, next_attempt_at=_past())
    MessageFactory(sender=sender, recipient=offline, status=Status.PENDING, next_attempt_at=None)
    MessageFactory(
        sender=sender,
        recipient=waiting_online,
        status=Status.PENDING,
        next_attempt_at=timezone.now() + timedelta(seconds=30),
    )
    before = _rows()

    assert services.sweep_pending() == 1

    assert queued_tasks(redis) == [(BACKLOG_TASK, [due_online.pk, "mobile"])]
    # The sweep only dispatches; statuses are the backlog task's business.
    assert _rows() == before


# --- stuck `queued` -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_relay_announces_only_lanes_with_due_queued_messages_and_writes_to_none(redis):
    sender, recipient = SenderFactory(), MobileUserFactory()
    due = MessageFactory(sender=sender, recipient=recipient, next_attempt_at=_past())
    due_high = MessageFactory(
        sender=sender, recipient=recipient, next_attempt_at=_past(), priority=Priority.HIGH
    )
    not_yet = MessageFactory(
        sender=sender, recipient=recipient, next_attempt_at=timezone.now() + timedelta(minutes=1)
    )
    pending_low = MessageFactory(
        sender=sender,
        recipient=recipient,
        status=Status.PENDING,
        next_attempt_at=_past(),
        priority=Priority.LOW,
    )
    before = {m.pk: (m.status, m.next_attempt_at) for m in Message.objects.all()}

    assert relay.relay_round() == 2  # high and normal: low has only a pending message

    assert dispatched_ids(redis) == [str(due.pk)]  # not `not_yet`, which is not due
    assert dispatched_ids(redis, "high") == [str(due_high.pk)]
    assert queued_tasks(redis, "low") == []
    assert {m.pk: (m.status, m.next_attempt_at) for m in Message.objects.all()} == before
    assert {not_yet.pk, pending_low.pk} <= set(before)


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_relay_rounds_lead_to_each_message_being_delivered_once(redis):
    sender, recipient = SenderFactory(), MobileUserFactory()
    messages = [
        MessageFactory(sender=sender, recipient=recipient, next_attempt_at=_past()) for _ in range(30)
    ]

    results = run_together(relay.relay_round, relay.relay_round)

    assert results == [1, 1]  # a task too many claims nothing
    reports = run_together(*[lambda: services.messages_deliver_due(priority=Priority.NORMAL)] * len(results))
    assert sum(r.claimed for r in reports) == len(messages)  # each once, between them
    assert set(Message.objects.values_list("status", flat=True)) == {Status.PENDING}


# --- dead-letter requeue --------------------------------------------------------------------


def _dead(sender, recipient, **kwargs) -> Message:
    message = _sent(sender, recipient, retry_count=6, **kwargs)
    services.messages_fail(Message.objects.filter(pk=message.pk), reason="no ack after 7 attempts")
    return message


@pytest.mark.django_db(transaction=True)
def test_requeue_resets_and_dispatches_after_commit(redis):
    sender, recipient = SenderFactory(), MobileUserFactory()
    message = _dead(sender, recipient)
    other = _dead(sender, recipient)
    before = timezone.now()

    with transaction.atomic():
        requeued = services.dead_letters_requeue(dead_letters=DeadLetter.objects.filter(message=message))
        assert dispatched_ids(redis) == []

    assert requeued == [message.pk]
    assert dispatched_ids(redis) == [str(message.pk)]
    message.refresh_from_db()
    assert (message.status, message.retry_count, message.failed_at, message.failure_reason) == (
        Status.QUEUED,
        0,
        None,
        "",
    )
    assert message.next_attempt_at > before
    assert message.delivered_at is None and message.read_at is None
    assert not DeadLetter.objects.filter(message=message).exists()
    # The other dead letter is untouched.
    assert Message.objects.get(pk=other.pk).status == Status.FAILED
    assert DeadLetter.objects.filter(message=other).exists()


@pytest.mark.django_db(transaction=True)
def test_requeue_twice_dispatches_once(redis):
    message = _dead(SenderFactory(), MobileUserFactory())
    dead_letters = DeadLetter.objects.filter(message=message)
    services.dead_letters_requeue(dead_letters=dead_letters)

    assert services.dead_letters_requeue(dead_letters=dead_letters) == []

    assert dispatched_ids(redis) == [str(message.pk)]
    assert Message.objects.get(pk=message.pk).status == Status.QUEUED


@pytest.mark.django_db(transaction=True)
def test_requeue_rolled_back_dispatches_nothing(redis):
    message = _dead(SenderFactory(), MobileUserFactory())

    with pytest.raises(RuntimeError), transaction.atomic():
        services.dead_letters_requeue(dead_letters=DeadLetter.objects.filter(message=message))
        raise RuntimeError("admin action failed")

    assert dispatched_ids(redis) == []
    assert Message.objects.get(pk=message.pk).status == Status.FAILED
    assert DeadLetter.objects.filter(message=message).exists()


def test_requeue_gives_an_expired_message_a_fresh_expiry(sender, mobile_user):
    message = MessageFactory(
        sender=sender, recipient=mobile_user, status=Status.PENDING, ttl_seconds=120, expires_at=_past()
    )
    no_ttl = _dead(sender, mobile_user)
    services.sweep_expired()
    before = timezone.now()

    requeued = services.dead_letters_requeue(dead_letters=DeadLetter.objects.all())

    assert set(requeued) == {message.pk, no_ttl.pk}
    message.refresh_from_db()
    assert message.status == Status.QUEUED
    ttl = timedelta(seconds=120)
    assert before + ttl <= message.expires_at <= timezone.now() + ttl
    assert Message.objects.get(pk=no_ttl.pk).expires_at is None
    # Not expired any more: the expiry sweep leaves it alone.
    assert services.sweep_expired() == 0
    assert not DeadLetter.objects.exists()


def test_requeued_message_can_fail_again_with_a_new_dead_letter(sender, mobile_user):
    message = _dead(sender, mobile_user)
    services.dead_letters_requeue(dead_letters=DeadLetter.objects.filter(message=message))

    services.messages_fail(Message.objects.filter(pk=message.pk), reason="second time")

    assert DeadLetter.objects.get(message=message).reason == "second time"


# --- idempotency keys -----------------------------------------------------------------------


def _key(sender, name: str, age: timedelta) -> IdempotencyKey:
    record = IdempotencyKey.objects.create(sender=sender, key=name, request_hash="h")
    IdempotencyKey.objects.filter(pk=record.pk).update(created_at=timezone.now() - age)
    return record


def test_purge_deletes_only_keys_past_their_ttl(sender, settings):
    settings.IDEMPOTENCY_KEY_TTL_HOURS = 48
    _key(sender, "fresh", timedelta(hours=1))
    _key(sender, "day", timedelta(hours=23))
    _key(sender, "two-days", timedelta(hours=47))
    _key(sender, "old", timedelta(hours=49))

    assert services.idempotency_keys_purge() == 1

    assert set(IdempotencyKey.objects.values_list("key", flat=True)) == {"fresh", "day", "two-days"}
    assert services.idempotency_keys_purge() == 0


def test_purge_keeps_keys_for_at_least_a_day_whatever_the_setting(sender, settings):
    settings.IDEMPOTENCY_KEY_TTL_HOURS = 1
    _key(sender, "day", timedelta(hours=23))
    _key(sender, "old", timedelta(hours=25))

    assert services.idempotency_keys_purge() == 1

    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["day"]
