"""Delivery in chunks: one presence lookup and one event per recipient; breaker-open waits."""

from __future__ import annotations

import copy
import socket
import time
from datetime import timedelta

import pytest
from channels.layers import channel_layers
from django.utils import timezone

from apps.accounts import presence
from apps.accounts.models import PartyKind
from apps.accounts.party import Party
from apps.common import breaker as breakers
from apps.common.breaker import CircuitOpen
from apps.conversations.services import conversation_message_send
from apps.messaging import lifecycle, services
from apps.messaging.models import DeliveryAttempt, Message, Outcome, Status
from apps.messaging.services import chunks
from tests.factories import ConversationFactory, MobileUserFactory
from tests.messaging.test_delivery import _connect, _delivered_ids, _receive
from tests.sockets import event_payloads, socket_open


@pytest.fixture(autouse=True)
def _fresh_breakers(redis):
    breakers._closed_until.clear()
    yield
    breakers._closed_until.clear()


def _batch(sender, recipients_and_contents) -> list[Message]:
    items = [{"recipient_phone_number": r.phone_number, "content": c} for r, c in recipients_and_contents]
    return services.messages_send_batch(sender=sender, items=items)


def _ids(messages) -> list[str]:
    return [str(m.pk) for m in messages]


def _statuses(messages) -> list[str]:
    order = {m.pk: i for i, m in enumerate(messages)}
    rows = sorted(Message.objects.filter(pk__in=order).values_list("pk", "status"), key=lambda r: order[r[0]])
    return [status for _, status in rows]


def test_chunk_sends_each_online_recipient_one_event_in_seq_order_and_holds_offline_ones(
    sender, mobile_user, stranger, redis
):
    channel = _connect(mobile_user.pk)
    messages = _batch(sender, [(mobile_user, "a"), (stranger, "b"), (mobile_user, "c")])

    report = services.messages_deliver_chunk(message_ids=_ids(messages))

    assert (report.sent, report.offline, report.failed) == (2, 1, 0)
    event = _receive(channel)
    assert _delivered_ids(event) == [str(messages[0].pk), str(messages[2].pk)]
    assert [m["seq"] for m in event_payloads(event)] == [1, 2]
    assert _receive(channel, timeout=0.3) is None  # one event, not one per message
    assert _statuses(messages) == [Status.SENT, Status.PENDING, Status.SENT]
    outcomes = dict(DeliveryAttempt.objects.values_list("message_id", "outcome"))
    assert outcomes == {
        messages[0].pk: Outcome.SENT,
        messages[1].pk: Outcome.OFFLINE,
        messages[2].pk: Outcome.SENT,
    }
    # The offline recipient's push window opened (push_schedule after commit).
    assert report.offline_recipients == [Party.mobile(stranger.pk)]


def _connect_business(user_id: int) -> str:
    return socket_open(user_id, PartyKind.BUSINESS)


def test_chunk_delivers_chat_to_online_business_users_and_holds_offline_ones_without_a_push(
    sender, other_sender, redis, monkeypatch, django_capture_on_commit_callbacks
):
    pushes: list[int] = []
    monkeypatch.setattr(chunks, "push_schedule", lambda *, recipient_id: pushes.append(recipient_id))
    desk = _connect_business(sender.pk)
    mobile = MobileUserFactory()
    to_online = ConversationFactory(business=sender, mobile=mobile)
    to_offline = ConversationFactory(business=other_sender, mobile=mobile)
    messages = [
        conversation_message_send(conversation_id=c.pk, author=mobile, content=text)
        for c, text in ((to_online, "a"), (to_offline, "b"), (to_online, "c"))
    ]

    with django_capture_on_commit_callbacks(execute=True):
        report = services.messages_deliver_chunk(message_ids=_ids(messages))

    assert (report.sent, report.offline, report.failed) == (2, 1, 0)
    event = _receive(desk)
    assert _delivered_ids(event) == [str(messages[0].pk), str(messages[2].pk)]
    assert [m["sender"]["type"] for m in event_payloads(event)] == ["mobile", "mobile"]
    assert _receive(desk, timeout=0.3) is None
    assert _statuses(messages) == [Status.SENT, Status.PENDING, Status.SENT]
    assert report.offline_recipients == [Party.business(other_sender.pk)]
    assert pushes == []  # business users have no devices to wake


def test_rerunning_a_chunk_sends_nothing_twice(sender, mobile_user, stranger, redis):
    channel = _connect(mobile_user.pk)
    messages = _batch(sender, [(mobile_user, "a"), (stranger, "b")])
    services.messages_deliver_chunk(message_ids=_ids(messages))
    assert _receive(channel) is not None

    report = services.messages_deliver_chunk(message_ids=_ids(messages))

    assert report.sent == 0
    assert _receive(channel, timeout=0.3) is None
    assert DeliveryAttempt.objects.count() == 2
    assert _statuses(messages) == [Status.SENT, Status.PENDING]


def test_chunk_fails_expired_messages_and_skips_pending_ones_not_yet_due(sender, mobile_user, redis):
    channel = _connect(mobile_user.pk)
    expired, later, now_due = _batch(
        sender, [(mobile_user, "old"), (mobile_user, "later"), (mobile_user, "now")]
    )
    Message.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    lifecycle.transition(
        Message.objects.filter(pk=later.pk),
        to=Status.PENDING,
        next_attempt_at=timezone.now() + timedelta(hours=1),
    )

    report = services.messages_deliver_chunk(message_ids=_ids([expired, later, now_due]))

    assert (report.sent, report.failed, report.not_due) == (1, 1, 1)
    assert _delivered_ids(_receive(channel)) == [str(now_due.pk)]
    assert _statuses([expired, later, now_due]) == [Status.FAILED, Status.PENDING, Status.SENT]


def test_open_channel_layer_breaker_keeps_messages_pending_without_calling_the_layer(
    sender, mobile_user, redis
):
    channel = _connect(mobile_user.pk)
    for _ in range(10):
        breakers.breaker(breakers.CHANNEL_LAYER).record(ok=False)
    messages = _batch(sender, [(mobile_user, "a"), (mobile_user, "b")])

    with pytest.raises(CircuitOpen):
        services.messages_deliver_chunk(message_ids=_ids(messages))

    assert _statuses(messages) == [Status.PENDING, Status.PENDING]
    assert _receive(channel, timeout=0.3) is None
    assert set(DeliveryAttempt.objects.values_list("outcome", flat=True)) == {Outcome.ERROR}
    assert not Message.objects.filter(status=Status.FAILED).exists()


@pytest.fixture
def layer_down(settings):
    """Point the channel layer (only) at a closed port; yield a function that restores it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    up = copy.deepcopy(settings.CHANNEL_LAYERS)
    down = copy.deepcopy(up)
    down["default"]["CONFIG"]["hosts"] = [f"redis://127.0.0.1:{port}/0"]
    settings.CHANNEL_LAYERS = down
    channel_layers.backends.clear()

    def restore() -> None:
        settings.CHANNEL_LAYERS = up
        channel_layers.backends.clear()

    yield restore
    restore()


def test_breaker_opens_on_a_failing_channel_layer_and_messages_sent_meanwhile_are_delivered_after(
    sender, settings, redis, layer_down
):
    settings.CIRCUIT_BREAKER_RESET_SECONDS = 0.5
    recipients = [MobileUserFactory() for _ in range(12)]
    channels = {}
    for r in recipients:
        # Presence lives in the (working) Redis; only the layer is unreachable.

        presence.connection_seen(party=Party.mobile(r.pk), channel_name=f"sock-{r.pk}")
    guard = breakers.breaker(breakers.CHANNEL_LAYER)

    # Ten real failed sends through the unreachable layer open the breaker.
    sent_while_down = []
    for r in recipients[:10]:
        message = services.message_send(sender=sender, recipient_phone_number=r.phone_number, content="x")
        sent_while_down.append(message)
        with pytest.raises(Exception):  # noqa: B017 - whatever the layer raises, it must propagate
            services.message_deliver(message_id=message.pk)
    assert guard.state() == "open"

    # While open, deliveries wait without touching the layer; nothing fails.
    for r in recipients[10:]:
        message = services.message_send(sender=sender, recipient_phone_number=r.phone_number, content="y")
        sent_while_down.append(message)
        with pytest.raises(CircuitOpen):
            services.message_deliver(message_id=message.pk)
    assert _statuses(sent_while_down) == [Status.PENDING] * 12
    assert not Message.objects.filter(status=Status.FAILED).exists()

    # The layer comes back; after the wait the first delivery is the half-open trial.
    layer_down()
    for r in recipients:
        channels[r.pk] = _connect(r.pk)
    time.sleep(0.55)
    assert guard.state() == "half_open"
    for r in recipients:
        services.recipient_deliver_backlog(recipient=Party.mobile(r.pk))

    assert guard.state() == "closed"
    assert _statuses(sent_while_down) == [Status.SENT] * 12
    for r, message in zip(recipients, sent_while_down, strict=True):
        assert _delivered_ids(_receive(channels[r.pk])) == [str(message.pk)]
