"""Delivery to a real HTTP receiver: signed body, retries, backoff, give-up, pause, deactivation."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import reverse

from apps.common import clock
from apps.messaging import lifecycle, services
from apps.messaging.models import Message, Status
from apps.webhooks import delivery
from apps.webhooks import services as services_webhooks
from apps.webhooks.models import AttemptOutcome, EventStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent
from apps.webhooks.signing import signature

from ..factories import MessageFactory
from ..ops.test_metrics import scrape
from .conftest import endpoint_for

pytestmark = pytest.mark.django_db(transaction=True)


def _sent(sender, recipient, n=1, *, now=None):
    messages = [MessageFactory(sender=sender, recipient=recipient) for _ in range(n)]
    lifecycle.transition(Message.objects.filter(pk__in=[m.pk for m in messages]), to=Status.SENT, now=now)
    return messages


def test_receiver_gets_the_signed_event_with_the_recipients_phone(
    sender, mobile_user, endpoint, receiver, now
):
    [message] = _sent(sender, mobile_user, now=now)
    report = delivery.lane_run(endpoint_id=endpoint.pk, now=now)

    assert (report.attempts, report.delivered) == (1, 1)
    [request] = receiver.requests
    event = WebhookEvent.objects.get()
    assert request.headers["webhook-id"] == str(event.event_id)
    assert request.headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-signature"] == signature(
        secret=endpoint.secret,
        webhook_id=str(event.event_id),
        timestamp=int(now.timestamp()),
        body=request.body,
    )
    assert request.json == {
        "id": str(event.event_id),
        "type": "message.sent",
        "timestamp": "2026-01-05T12:00:00Z",
        "data": {
            "message_id": str(message.pk),
            "status": "sent",
            "at": "2026-01-05T12:00:00Z",
            "kind": "one_way",
            "conversation_id": None,
            "recipient_phone_number": mobile_user.phone_number,
            "failure_reason": None,
        },
    }
    event.refresh_from_db()
    assert (event.status, event.attempts, event.delivered_at) == (EventStatus.DELIVERED, 1, now)
    [attempt] = WebhookDelivery.objects.all()
    assert (attempt.attempt, attempt.outcome, attempt.status_code, attempt.next_attempt_at) == (
        1,
        AttemptOutcome.SUCCESS,
        200,
        None,
    )
    # Delivered: nothing more to send, however often the lane or the sweep runs.
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=now + timedelta(hours=2)).attempts == 0
    assert delivery.due_endpoint_ids(now=now + timedelta(hours=2)) == []
    assert len(receiver.requests) == 1


def test_events_of_an_endpoint_leave_in_creation_order(sender, mobile_user, endpoint, receiver, now):
    messages = _sent(sender, mobile_user, 5, now=now)
    for message in messages:
        lifecycle.transition(Message.objects.filter(pk=message.pk), to=Status.DELIVERED, now=now)
    delivery.lane_run(endpoint_id=endpoint.pk, now=now)
    got = [(r.json["type"], r.json["data"]["message_id"]) for r in receiver.requests]
    assert got[:5] == [("message.sent", str(m.pk)) for m in sorted(messages, key=lambda m: m.pk)]
    assert got[5:] == [("message.delivered", str(m.pk)) for m in messages]


def test_500_is_retried_with_backoff_and_the_same_webhook_id(
    sender, mobile_user, endpoint, receiver, now, settings
):
    receiver.script = lambda n, request: 500 if n < 2 else 204
    _sent(sender, mobile_user, now=now)

    assert delivery.lane_run(endpoint_id=endpoint.pk, now=now).delivered == 0
    event = WebhookEvent.objects.get()
    first_retry = event.next_attempt_at - now
    base = timedelta(seconds=settings.WEBHOOK_RETRY_BASE_SECONDS)
    assert base / 2 <= first_retry <= base
    # Not due before its retry time.
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=now + first_retry / 2).attempts == 0

    later = event.next_attempt_at
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=later).delivered == 0
    event.refresh_from_db()
    assert base <= event.next_attempt_at - later <= 2 * base
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=event.next_attempt_at).delivered == 1

    assert len({r.webhook_id for r in receiver.requests}) == 1
    assert len(receiver.requests) == 3
    attempts = list(
        WebhookDelivery.objects.order_by("id").values_list("attempt", "outcome", "status_code", "error")
    )
    assert attempts == [
        (1, "failure", 500, "HTTP 500"),
        (2, "failure", 500, "HTTP 500"),
        (3, "success", 204, ""),
    ]


def test_each_attempt_is_counted_in_the_metrics_by_its_outcome(
    sender, mobile_user, endpoint, receiver, now, anonymous_client
):
    receiver.script = lambda n, request: 500 if n == 0 else 204
    before = scrape(anonymous_client)
    _sent(sender, mobile_user, now=now)

    delivery.lane_run(endpoint_id=endpoint.pk, now=now)
    delivery.lane_run(endpoint_id=endpoint.pk, now=WebhookEvent.objects.get().next_attempt_at)

    after = scrape(anonymous_client)
    counted = {
        key[1]: after[key] - before.get(key, 0.0)
        for key in after
        if key[0] == "messaging_webhook_deliveries_total" and after[key] != before.get(key, 0.0)
    }
    assert counted == {(("outcome", "failure"),): 1, (("outcome", "success"),): 1}


def test_redirect_is_a_failure_and_not_followed(sender, mobile_user, endpoint, receiver, now):
    receiver.script = lambda n, request: 307
    _sent(sender, mobile_user, now=now)
    delivery.lane_run(endpoint_id=endpoint.pk, now=now)
    assert len(receiver.requests) == 1
    attempt = WebhookDelivery.objects.get()
    assert (attempt.status_code, attempt.outcome, attempt.error) == (
        307,
        "failure",
        "redirects are not followed",
    )


def test_event_is_given_up_after_max_attempts(sender, mobile_user, endpoint, receiver, now, settings):
    settings.WEBHOOK_MAX_ATTEMPTS = 4
    receiver.script = lambda n, request: 503
    _sent(sender, mobile_user, now=now)
    at = now
    for _ in range(10):
        delivery.lane_run(endpoint_id=endpoint.pk, now=at)
        event = WebhookEvent.objects.get()
        if event.next_attempt_at is None:
            break
        at = event.next_attempt_at
    assert (event.status, event.attempts) == (EventStatus.GIVEN_UP, 4)
    outcomes = list(WebhookDelivery.objects.order_by("id").values_list("outcome", "next_attempt_at"))
    assert [o for o, _ in outcomes] == ["failure", "failure", "failure", "gave_up"]
    assert outcomes[-1][1] is None
    assert len(receiver.requests) == 4
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=at + timedelta(days=1)).attempts == 0


def test_backoff_doubles_from_the_base_and_is_capped_at_an_hour(settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 5
    delays = [delivery.retry_delay(n, jitter=False) for n in range(1, 14)]
    assert delays[:4] == [5, 10, 20, 40]
    assert max(delays) == 3600 == delays[-1]
    assert all(delivery.retry_delay(n) <= 3600 for n in range(1, 40))


def test_receiver_down_for_a_while_gets_every_event_later(sender, mobile_user, endpoint, receiver, now):
    receiver.stop()
    _sent(sender, mobile_user, 4, now=now)

    report = delivery.lane_run(endpoint_id=endpoint.pk, now=now)
    # Unreachable: one attempt, then the endpoint waits for that event's retry instead of
    # spending a connect (or a timeout) on each of the others.
    assert report.attempts == 1
    endpoint.refresh_from_db()
    assert endpoint.paused_until is not None
    assert endpoint.paused_until > now
    assert "ConnectError" in WebhookDelivery.objects.get().error
    assert delivery.due_endpoint_ids(now=now) == []
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=now).attempts == 0

    receiver.start()
    resume = endpoint.paused_until
    assert delivery.due_endpoint_ids(now=resume) == [endpoint.pk]
    report = delivery.lane_run(endpoint_id=endpoint.pk, now=resume)
    assert report.delivered == 4
    assert len(set(receiver.successful_ids())) == 4
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {EventStatus.DELIVERED}


def test_endpoint_failing_every_attempt_for_24_hours_is_deactivated(
    sender, mobile_user, endpoint, receiver, now
):
    receiver.script = lambda n, request: 500
    _sent(sender, mobile_user, now=now)
    delivery.lane_run(endpoint_id=endpoint.pk, now=now)
    endpoint.refresh_from_db()
    assert (endpoint.is_active, endpoint.failing_since) == (True, now)

    # A new event 23 h later fails too: still active (not yet 24 h of failures).
    _sent(sender, mobile_user, now=now + timedelta(hours=23))
    delivery.lane_run(endpoint_id=endpoint.pk, now=now + timedelta(hours=23))
    endpoint.refresh_from_db()
    assert endpoint.is_active

    at = now + timedelta(hours=24, seconds=1)
    delivery.lane_run(endpoint_id=endpoint.pk, now=at)
    endpoint.refresh_from_db()
    assert (endpoint.is_active, endpoint.deactivated_at) == (False, at)
    # Inactive: nothing is sent, nothing new is recorded for it.
    requests = len(receiver.requests)
    _sent(sender, mobile_user, now=at)
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=at + timedelta(hours=2)).attempts == 0
    assert len(receiver.requests) == requests
    assert WebhookEvent.objects.filter(created_at=at).count() == 0


def test_a_success_resets_the_failure_clock(sender, mobile_user, endpoint, receiver, now):
    receiver.script = lambda n, request: 500 if n == 0 else 200
    _sent(sender, mobile_user, now=now)
    delivery.lane_run(endpoint_id=endpoint.pk, now=now)
    event = WebhookEvent.objects.get()
    delivery.lane_run(endpoint_id=endpoint.pk, now=event.next_attempt_at)
    endpoint.refresh_from_db()
    assert (endpoint.failing_since, endpoint.is_active) == (None, True)
    receiver.script = lambda n, request: 500
    _sent(sender, mobile_user, now=now + timedelta(hours=25))
    delivery.lane_run(endpoint_id=endpoint.pk, now=now + timedelta(hours=25))
    endpoint.refresh_from_db()
    assert endpoint.is_active


def test_one_senders_dead_receiver_does_not_hold_anothers_events(
    sender, other_sender, mobile_user, receiver, now
):
    dead = endpoint_for(sender, "http://127.0.0.1:9/dead")  # discard port: refused
    alive = endpoint_for(other_sender, receiver.url)
    _sent(sender, mobile_user, 3, now=now)
    _sent(other_sender, mobile_user, 3, now=now)
    assert set(delivery.due_endpoint_ids(now=now)) == {dead.pk, alive.pk}

    delivery.lane_run(endpoint_id=dead.pk, now=now)
    delivery.lane_run(endpoint_id=alive.pk, now=now)

    assert len(receiver.requests) == 3
    senders_messages = set(Message.objects.filter(sender=other_sender).values_list("pk", flat=True))
    assert {r.json["data"]["message_id"] for r in receiver.requests} == {str(pk) for pk in senders_messages}


def test_a_held_lane_is_not_taken_twice_and_frees_itself_after_its_lease(
    sender, mobile_user, endpoint, receiver, now
):
    _sent(sender, mobile_user, now=now)
    lane = delivery._Lane.take(endpoint.pk, now)
    assert lane is not None
    assert delivery._Lane.take(endpoint.pk, now) is None
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=now).attempts == 0
    assert delivery.due_endpoint_ids(now=now) == []
    # A worker that died holding it: the lane is free once its lease ends.
    expired = now + timedelta(seconds=delivery.lease_seconds() + 1)
    assert delivery.due_endpoint_ids(now=expired) == [endpoint.pk]
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=expired).delivered == 1


def test_claimed_event_of_a_dead_worker_is_sent_after_its_lease(sender, mobile_user, endpoint, receiver, now):
    _sent(sender, mobile_user, now=now)
    lease = now + timedelta(seconds=delivery.lease_seconds())
    [claimed] = delivery._claim(endpoint.pk, now, lease)  # then the worker dies
    assert delivery._claim(endpoint.pk, now, lease) == []
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=now).attempts == 0
    assert delivery.lane_run(endpoint_id=endpoint.pk, now=lease).delivered == 1
    assert receiver.requests[0].webhook_id == str(claimed.event_id)


def test_sweep_wakes_due_endpoints_once(sender, mobile_user, endpoint, receiver, now, redis):
    _sent(sender, mobile_user, now=now)  # its commit woke the endpoint: one task waits
    assert redis.llen("webhooks") == 1
    assert delivery.lanes_sweep(now=now) == 0  # that task has not started yet: no second one
    # The task started (clearing the flag) and its worker died: the sweep sends another.
    redis.delete("webhooks")
    delivery.wake_flag_clear(endpoint.pk)
    assert delivery.lanes_sweep(now=now) == 1
    assert redis.llen("webhooks") == 1
    task = json.loads(redis.lindex("webhooks", 0))
    assert task["headers"]["task"] == "apps.webhooks.tasks.deliver_endpoint"


def test_phone_number_is_read_when_sent(sender, mobile_user, endpoint, receiver, now):
    # So that a number erased (SPEC section 10) after the change is not sent later.
    _sent(sender, mobile_user, now=now)
    type(mobile_user).objects.filter(pk=mobile_user.pk).update(phone_number="")
    delivery.lane_run(endpoint_id=endpoint.pk, now=now)
    assert receiver.requests[0].json["data"]["recipient_phone_number"] is None


def test_deliveries_count_in_the_metric(sender, mobile_user, endpoint, receiver, now, settings):
    from apps.common.metrics import WEBHOOK_DELIVERIES

    def value(outcome):
        return WEBHOOK_DELIVERIES.labels(outcome=outcome)._value.get()

    settings.WEBHOOK_MAX_ATTEMPTS = 2
    before = {o: value(o) for o in ("success", "failure", "gave_up")}
    receiver.script = lambda n, request: 200 if n == 0 else 500
    _sent(sender, mobile_user, 2, now=now)
    delivery.lane_run(endpoint_id=endpoint.pk, now=now)
    event = WebhookEvent.objects.get(status=EventStatus.PENDING)
    delivery.lane_run(endpoint_id=endpoint.pk, now=event.next_attempt_at)
    assert {o: value(o) - before[o] for o in before} == {"success": 1, "failure": 1, "gave_up": 1}
    assert WebhookEndpoint.objects.get().is_active


def test_task_gives_its_slot_back_after_its_time_slice_and_requeues_itself(
    sender, mobile_user, endpoint, receiver, redis, settings
):
    from apps.webhooks.tasks import deliver_endpoint

    _sent(sender, mobile_user, 3)
    redis.delete("webhooks")
    settings.WEBHOOK_BATCH = 1
    settings.WEBHOOK_SLICE_SECONDS = 0  # the slice ends after the first round
    deliver_endpoint(endpoint.pk)
    assert 1 <= len(receiver.requests) < 3
    assert redis.llen("webhooks") == 1  # the rest waits behind other endpoints' tasks
    settings.WEBHOOK_SLICE_SECONDS = 60
    deliver_endpoint(endpoint.pk)
    assert len(set(receiver.successful_ids())) == 3


def test_endpoint_deleted_while_its_events_are_sent_ends_the_lane_quietly(
    sender, mobile_user, endpoint, receiver
):
    from django.db import connection

    def delete_then_answer(n, request):
        WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()
        connection.close()  # this thread's own connection
        return 200

    receiver.script = delete_then_answer
    _sent(sender, mobile_user, 2)
    report = delivery.lane_run(endpoint_id=endpoint.pk)
    assert report.attempts == 2
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookEvent.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_a_canceled_message_produces_message_canceled_and_its_page_shows_the_webhook_history(
    sender, mobile_user, endpoint_canceled, receiver, now, admin_client
):
    message = MessageFactory(sender=sender, recipient=mobile_user, status=Status.QUEUED)
    services.message_cancel(sender=sender, message_id=message.pk)
    delivery.lane_run(endpoint_id=endpoint_canceled.pk)

    [request] = receiver.requests
    body = json.loads(request.body)
    assert (body["type"], body["data"]["message_id"]) == ("message.canceled", str(message.pk))
    assert body["data"]["failure_reason"] == "canceled by the sender"
    page = admin_client.get(reverse("admin:messaging_message_change", args=[message.pk])).content.decode()
    assert "webhook event recorded" in page and "webhook delivery" in page
    assert "message.canceled, attempt 1: success (HTTP 200)" in page


@pytest.fixture
def endpoint_canceled(sender, receiver):
    return endpoint_for(sender, receiver.url, events=["message.canceled"])


@pytest.mark.parametrize("skew", [-300, 300])
def test_a_worker_whose_host_clock_is_off_sends_and_retries_on_the_shared_clock(
    skew, sender, mobile_user, endpoint, receiver, host_clock_off, settings
):
    # Events are recorded on the shared clock (apps/common/clock.py) by whichever process made
    # the change; the worker sending them must compare and schedule on that clock too: 5 minutes
    # behind it would see nothing due for 5 minutes, 5 minutes ahead it would retry early.
    host_clock_off(skew)
    receiver.script = lambda n, request: 500
    _sent(sender, mobile_user)

    assert delivery.lane_run(endpoint_id=endpoint.pk).attempts == 1
    [request] = receiver.requests
    assert abs(int(request.headers["webhook-timestamp"]) - clock.timestamp()) < 60
    event = WebhookEvent.objects.get()
    wait = (event.next_attempt_at - clock.now()).total_seconds()
    assert 0 < wait <= settings.WEBHOOK_RETRY_BASE_SECONDS
    assert delivery.due_endpoint_ids(now=clock.now()) == []
    later = event.next_attempt_at + timedelta(seconds=1)
    assert delivery.due_endpoint_ids(now=later) == [endpoint.pk]


def test_redelivery_is_due_at_once_on_the_shared_clock(
    sender, mobile_user, endpoint, receiver, host_clock_off, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    receiver.script = lambda n, request: 500 if n == 0 else 200
    _sent(sender, mobile_user)
    delivery.lane_run(endpoint_id=endpoint.pk)
    assert WebhookEvent.objects.get().status == EventStatus.GIVEN_UP

    host_clock_off(300)  # the web process that takes the sender's request is 5 minutes ahead
    services_webhooks.event_redeliver(delivery=WebhookDelivery.objects.get())
    host_clock_off(0)  # the worker is right
    assert delivery.lane_run(endpoint_id=endpoint.pk).delivered == 1


def test_a_receiver_slower_than_the_timeout_fails_the_attempt_and_pauses_its_endpoint(
    sender, mobile_user, endpoint, receiver, now, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.hold.set()  # answers only after 30 s
    _sent(sender, mobile_user, 2, now=now)
    try:
        report = delivery.lane_run(endpoint_id=endpoint.pk, now=now)
    finally:
        receiver.hold.clear()

    # One timeout, not one per event: the second waits for the first one's retry.
    assert report.attempts == 1
    attempt = WebhookDelivery.objects.get()
    assert (attempt.status_code, attempt.outcome, attempt.error) == (None, "failure", "timed out after 0.5 s")
    assert attempt.duration_ms < 30_000
    endpoint.refresh_from_db()
    assert endpoint.paused_until == attempt.next_attempt_at
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {EventStatus.PENDING}


def test_an_answer_dribbled_past_the_timeout_is_a_timeout_not_a_success(
    sender, mobile_user, endpoint, receiver, now, settings
):
    # Each byte comes well within the timeout, the whole answer does not: WEBHOOK_TIMEOUT_SECONDS
    # bounds the attempt, so a receiver cannot hold a worker (and its lane's lease) for longer.
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.5
    receiver.dribble_seconds = 3
    _sent(sender, mobile_user, now=now)

    delivery.lane_run(endpoint_id=endpoint.pk, now=now)

    attempt = WebhookDelivery.objects.get()
    assert (attempt.status_code, attempt.outcome, attempt.error) == (None, "failure", "timed out after 0.5 s")
    assert WebhookEvent.objects.get().status == EventStatus.PENDING
    assert receiver.successful_ids() == []


def test_an_answer_dribbled_within_the_timeout_is_a_success(
    sender, mobile_user, endpoint, receiver, now, settings
):
    settings.WEBHOOK_TIMEOUT_SECONDS = 5
    receiver.dribble_seconds = 0.3
    _sent(sender, mobile_user, now=now)

    assert delivery.lane_run(endpoint_id=endpoint.pk, now=now).delivered == 1


def test_events_to_a_receiver_reuse_one_kept_alive_connection(sender, mobile_user, endpoint, receiver, now):
    _sent(sender, mobile_user, 3, now=now)
    delivery.lane_run(endpoint_id=endpoint.pk, now=now)
    _sent(sender, mobile_user, now=now)  # a later task of the same process
    delivery.lane_run(endpoint_id=endpoint.pk, now=now)

    assert len(set(receiver.successful_ids())) == 4
    assert len({request.peer for request in receiver.requests}) == 1
