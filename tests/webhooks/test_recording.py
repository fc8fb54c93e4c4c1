"""Recording: one event row per (status change, subscribed endpoint), in the change's transaction."""

from __future__ import annotations

import pytest
from django.db import transaction

from apps.conversations.services import conversation_message_send
from apps.messaging import hooks, lifecycle
from apps.messaging.models import Message, Status
from apps.webhooks.models import EventStatus, EventType, WebhookEvent

from ..factories import MessageFactory
from .conftest import endpoint_for

pytestmark = pytest.mark.django_db


def _move(message, to, **kwargs):
    return lifecycle.transition(Message.objects.filter(pk=message.pk), to=to, **kwargs)


def test_status_change_records_one_event_per_subscribed_endpoint(sender, mobile_user, receiver):
    first = endpoint_for(sender, receiver.url)
    second = endpoint_for(sender, receiver.url + "/2", events=["message.delivered"])
    message = MessageFactory(sender=sender, recipient=mobile_user)

    _move(message, Status.SENT)
    _move(message, Status.DELIVERED)

    events = list(WebhookEvent.objects.order_by("type", "endpoint_id"))
    assert [(e.endpoint_id, e.type) for e in events] == [
        (first.pk, "message.delivered"),
        (second.pk, "message.delivered"),
        (first.pk, "message.sent"),
    ]
    delivered = events[0]
    assert delivered.status == EventStatus.PENDING
    assert delivered.next_attempt_at is not None
    assert delivered.recipient_id == mobile_user.pk
    assert delivered.payload == {
        "message_id": str(message.pk),
        "status": "delivered",
        "at": delivered.payload["at"],
        "kind": "one_way",
        "conversation_id": None,
        "recipient_phone_number": None,
        "failure_reason": None,
    }


def test_failed_carries_its_reason(sender, mobile_user, endpoint):
    message = MessageFactory(sender=sender, recipient=mobile_user)
    _move(message, Status.FAILED, reason="expired")
    [event] = WebhookEvent.objects.all()
    assert (event.type, event.payload["failure_reason"]) == ("message.failed", "expired")


def test_canceled_status_maps_to_message_canceled(sender, mobile_user, endpoint):
    # The lead's cancel arrives through the same hook; the listener only maps the name.
    message = MessageFactory(sender=sender, recipient=mobile_user)
    row = lifecycle._Row(
        message.pk, "queued", "one_way", None, sender.pk, None, mobile_user.pk, "", message.created_at
    )
    with transaction.atomic():
        hooks.status_changed(
            hooks.StatusChange([row], status="canceled", at=message.created_at, reason="by sender")
        )
    [event] = WebhookEvent.objects.all()
    assert (event.type, event.payload["status"], event.payload["failure_reason"]) == (
        EventType.MESSAGE_CANCELED,
        "canceled",
        "by sender",
    )


def test_nothing_for_unsubscribed_inactive_or_unreported_changes(sender, mobile_user, receiver):
    endpoint_for(sender, receiver.url, events=["message.read"])
    endpoint_for(sender, receiver.url, is_active=False)
    message = MessageFactory(sender=sender, recipient=mobile_user)
    _move(message, Status.PENDING)  # not reported
    _move(message, Status.SENT)  # not subscribed (active endpoint), inactive one ignored
    assert not WebhookEvent.objects.exists()


def test_resend_of_a_sent_message_is_not_a_new_event(sender, mobile_user, endpoint):
    message = MessageFactory(sender=sender, recipient=mobile_user)
    _move(message, Status.SENT)
    _move(message, Status.SENT)  # re-written to a socket: restarts the ack clock only
    assert WebhookEvent.objects.count() == 1


def test_events_of_one_sender_never_go_to_another_senders_endpoint(
    sender, other_sender, mobile_user, receiver
):
    mine = endpoint_for(sender, receiver.url)
    theirs = endpoint_for(other_sender, receiver.url + "/other")
    messages = [MessageFactory(sender=sender, recipient=mobile_user) for _ in range(3)]
    other = MessageFactory(sender=other_sender, recipient=mobile_user)
    lifecycle.transition(Message.objects.filter(recipient=mobile_user), to=Status.SENT)

    by_endpoint = {}
    for event in WebhookEvent.objects.all():
        by_endpoint.setdefault(event.endpoint_id, set()).add(event.payload["message_id"])
    assert by_endpoint == {mine.pk: {str(m.pk) for m in messages}, theirs.pk: {str(other.pk)}}


def test_mobile_authors_messages_record_nothing_but_chat_received(
    sender, mobile_user, conversation, endpoint
):
    with transaction.atomic():
        message = conversation_message_send(
            conversation_id=conversation.pk, author=mobile_user, content="hello business"
        )
    _move(message, Status.SENT)
    _move(message, Status.DELIVERED)
    [event] = WebhookEvent.objects.all()
    assert event.type == EventType.CHAT_MESSAGE_RECEIVED
    assert event.payload["message_id"] == str(message.pk)
    assert event.payload["conversation_id"] == str(conversation.pk)
    assert event.payload["kind"] == "chat"


def test_rolled_back_change_leaves_no_event(sender, mobile_user, endpoint):
    message = MessageFactory(sender=sender, recipient=mobile_user)
    with pytest.raises(RuntimeError), transaction.atomic():
        _move(message, Status.SENT)
        assert WebhookEvent.objects.count() == 1
        raise RuntimeError("the change fails after the listener ran")
    assert not WebhookEvent.objects.exists()


def test_listener_costs_one_query_without_endpoints_and_two_with(
    sender, mobile_user, receiver, django_assert_num_queries
):
    messages = [MessageFactory(sender=sender, recipient=mobile_user) for _ in range(20)]
    batch = Message.objects.filter(pk__in=[m.pk for m in messages])
    with django_assert_num_queries(1):  # an unreported status: the transition's UPDATE only
        lifecycle.transition(batch, to=Status.PENDING)
    with django_assert_num_queries(2):  # ... + the endpoint look-up
        lifecycle.transition(batch, to=Status.SENT)
    endpoint_for(sender, receiver.url)
    endpoint_for(sender, receiver.url + "/2")
    with django_assert_num_queries(3):  # ... + one INSERT of 40 events
        lifecycle.transition(batch, to=Status.DELIVERED)
    assert WebhookEvent.objects.count() == 40


def test_delivery_is_woken_only_after_commit_and_once_per_endpoint(
    sender, mobile_user, endpoint, redis, django_capture_on_commit_callbacks
):
    messages = [MessageFactory(sender=sender, recipient=mobile_user) for _ in range(3)]
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        lifecycle.transition(Message.objects.filter(pk__in=[m.pk for m in messages]), to=Status.SENT)
        assert WebhookEvent.objects.count() == 3
    assert redis.llen("webhooks") == 0  # nothing enqueued inside the transaction
    for callback in callbacks:
        callback()
    assert redis.llen("webhooks") == 1  # one task for the endpoint, not one per event
    _move(messages[0], Status.DELIVERED)  # a wake-up while one is waiting adds none
    with django_capture_on_commit_callbacks(execute=True):
        _move(messages[1], Status.DELIVERED)
    assert redis.llen("webhooks") == 1
