"""End to end: status webhooks from the real processes to a real receiver, through a worker's death."""

from __future__ import annotations

import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from apps.webhooks.models import EventStatus, WebhookDelivery, WebhookEvent

from ..webhooks.receiver import Receiver

pytestmark = pytest.mark.e2e


@pytest.fixture
def stack(own_stack):
    return own_stack


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.hold.clear()
    server.stop()


def test_worker_killed_while_sending_the_delivered_event_still_gets_it_to_the_receiver(e2e, receiver):
    sender, mobile = e2e.sender(), e2e.mobile()
    stack = e2e.stack
    created = sender.api.post(
        "/api/v1/webhooks/", {"url": receiver.url, "events": ["message.delivered"], "description": "e2e"}
    )
    assert created.status == 201, created.body
    secret = created.body["secret"]
    socket = e2e.connect(mobile)  # acknowledges every frame

    # The receiver holds the first request: the worker is mid-attempt when it is killed.
    receiver.hold.set()
    message_id = e2e.send(sender, mobile, "hello")["id"]
    e2e.wait_status(sender, [message_id], "delivered")
    receiver.wait_for(lambda r: r.requests, timeout=30, what="the first attempt of message.delivered")
    stack.kill_worker()
    receiver.hold.clear()

    stack.start_worker()
    # Beat's sweep finds the event once its claim's lease is over; the new worker sends it.
    event = stack.wait(
        lambda: WebhookEvent.objects.filter(status=EventStatus.DELIVERED).first(),
        timeout=60,
        what="the delivered event to be delivered by the new worker",
    )
    assert len(receiver.requests) >= 2
    assert {r.webhook_id for r in receiver.requests} == {str(event.event_id)}
    last = receiver.requests[-1]
    assert last.json["type"] == "message.delivered"
    assert last.json["data"]["message_id"] == message_id
    assert last.json["data"]["recipient_phone_number"] == mobile.user.phone_number

    Webhook(secret).verify(last.body, last.headers)
    assert WebhookEvent.objects.count() == 1  # one event for one change, however often sent
    assert WebhookDelivery.objects.filter(event=event, outcome="success").count() == 1
    assert message_id in socket.message_ids()


def test_a_slow_receiver_does_not_hold_another_senders_events_and_each_gets_only_its_own(e2e):
    # Through the real worker (2 pool processes) and beat: sender A's receiver takes 1.5 s per
    # request (within the 2 s timeout), so A's 8 events need 12 s; sender B's receiver fails its
    # first request with a 500. B's events all arrive while A's lane is still busy, B's failed
    # one again with the same webhook-id, and no event reaches the other sender's receiver.
    slow, failing = Receiver(), Receiver()
    try:
        slow.script = lambda n, request: time.sleep(1.5) or 200
        failing.script = lambda n, request: 500 if n == 0 else 200
        a, b, mobile = e2e.sender(), e2e.sender(), e2e.mobile()
        secrets = {}
        for sender, receiver in ((a, slow), (b, failing)):
            created = sender.api.post(
                "/api/v1/webhooks/", {"url": receiver.url, "events": ["message.delivered"]}
            )
            assert created.status == 201, created.body
            secrets[receiver] = created.body["secret"]
        e2e.connect(mobile)  # acknowledges every frame

        a_ids = [e2e.send(a, mobile, f"a{i}")["id"] for i in range(8)]
        e2e.wait_status(a, a_ids, "delivered")
        b_ids = [e2e.send(b, mobile, f"b{i}")["id"] for i in range(3)]
        e2e.wait_status(b, b_ids, "delivered")

        failing.wait_for(lambda r: len(set(r.successful_ids())) == 3, timeout=10, what="B's 3 events")
        assert len(set(slow.successful_ids())) < 8  # A's lane was still at work meanwhile
        slow.wait_for(lambda r: len(set(r.successful_ids())) == 8, timeout=40, what="A's 8 events")

        for receiver, ids in ((slow, a_ids), (failing, b_ids)):
            assert {r.json["data"]["message_id"] for r in receiver.requests} == set(ids)
            for request in receiver.requests:
                Webhook(secrets[receiver]).verify(request.body, request.headers)
                other = secrets[failing if receiver is slow else slow]
                with pytest.raises(WebhookVerificationError):
                    Webhook(other).verify(request.body, request.headers)
        first, retried = (
            failing.requests[0],
            [r for r in failing.requests[1:] if r.webhook_id == failing.requests[0].webhook_id],
        )
        assert failing.answered[0] == (first.webhook_id, 500)
        assert len(retried) == 1 and retried[0].body == first.body
        assert len(failing.requests) == 4
        attempts = WebhookDelivery.objects.filter(event__event_id=first.webhook_id).order_by("attempt")
        assert [(d.attempt, d.outcome, d.status_code) for d in attempts] == [
            (1, "failure", 500),
            (2, "success", 200),
        ]
    finally:
        slow.stop()
        failing.stop()
