"""End to end: status webhooks from the real processes to a real receiver, through a worker's death."""

from __future__ import annotations

import pytest

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

    from standardwebhooks import Webhook

    Webhook(secret).verify(last.body, last.headers)
    assert WebhookEvent.objects.count() == 1  # one event for one change, however often sent
    assert WebhookDelivery.objects.filter(event=event, outcome="success").count() == 1
    assert message_id in socket.message_ids()
