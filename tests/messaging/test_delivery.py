"""Delivery: offline → pending, online → frame + sent, acks and reads, strict ordering."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts import presence
from apps.accounts.models import MobileUser
from apps.accounts.party import Party
from apps.common import bridge
from apps.media.models import Media, MediaStatus, MediaType
from apps.messaging import outgoing, services
from apps.messaging.models import Channel, DeadLetter, DeliveryAttempt, Message, Outcome, Status
from tests.factories import MessageFactory
from tests.sockets import event_payloads, socket_open, socket_receive


def _send(sender, recipient, content: str = "hi") -> Message:
    return services.message_send(
        sender=sender, recipient_phone_number=recipient.phone_number, content=content
    )


def _connect(user_id: int) -> str:
    """Simulate an open socket: a channel in the user's group and a fresh heartbeat."""
    return socket_open(user_id)


def _receive(channel: str, timeout: float = 2.0) -> dict | None:
    """Return the next event on `channel`, or None if nothing arrives within `timeout`."""
    return socket_receive(channel, timeout)


def _delivered_ids(event: dict) -> list[str]:
    assert event["type"] == "deliver.messages"
    return [m["id"] for m in event["messages"]]


def _attempts(message: Message) -> list[tuple[str, str]]:
    return list(DeliveryAttempt.objects.filter(message=message).values_list("channel", "outcome"))


@pytest.fixture
def online(redis, mobile_user) -> str:
    return _connect(mobile_user.pk)


# --- a message whose frame cannot be built ---------------------------------------------------


def _poisoned(sender, recipient) -> Message:
    """A message whose attachment names a thumbnail of no known format (bad stored data)."""
    message = _send(sender, recipient, "with a photo")
    pk = uuid.uuid4()
    Media.objects.create(
        id=pk,
        sender=sender,
        media_type=MediaType.IMAGE,
        content_type="image/png",
        size=10,
        file_name="photo.png",
        storage_key=f"media/test/{pk}.png",
        status=MediaStatus.READY,
        thumbnail_small_key=f"media/test/{pk}-150",
        message=message,
    )
    return message


def test_a_message_whose_frame_cannot_be_built_is_dead_lettered_and_the_others_go(
    sender, mobile_user, online
):
    before, poisoned, after = (
        _send(sender, mobile_user),
        _poisoned(sender, mobile_user),
        _send(sender, mobile_user),
    )

    report = services.messages_deliver_chunk(message_ids=[str(m.pk) for m in (before, poisoned, after)])

    assert report.sent == 2
    assert _delivered_ids(_receive(online)) == [str(before.pk), str(after.pk)]
    poisoned.refresh_from_db()
    assert poisoned.status == Status.FAILED
    assert DeadLetter.objects.get(message=poisoned).reason.startswith("frame encoding failed: KeyError")
    assert services.message_deliver(message_id=poisoned.pk) == "skipped"  # failed: never retried


# --- offline ----------------------------------------------------------------------------------


def test_offline_recipient_makes_message_pending_with_offline_attempt(sender, mobile_user, redis):
    message = _send(sender, mobile_user)

    assert services.message_deliver(message_id=message.pk) == "offline"

    message.refresh_from_db()
    assert message.status == Status.PENDING
    assert message.next_attempt_at is None
    assert message.sent_at is None
    assert _attempts(message) == [(Channel.WEBSOCKET, Outcome.OFFLINE)]


def test_offline_delivery_rerun_adds_no_attempt_and_changes_nothing(sender, mobile_user, redis):
    message = _send(sender, mobile_user)
    services.message_deliver(message_id=message.pk)
    before = Message.objects.filter(pk=message.pk).values().get()

    services.message_deliver(message_id=message.pk)

    assert Message.objects.filter(pk=message.pk).values().get() == before
    assert DeliveryAttempt.objects.filter(message=message).count() == 1


def test_stale_heartbeat_counts_as_offline(sender, mobile_user, redis, settings):
    presence.connection_seen(
        party=Party.mobile(mobile_user.pk),
        channel_name="old",
        now=timezone.now().timestamp() - settings.PRESENCE_STALE_SECONDS - 1,
    )
    message = _send(sender, mobile_user)

    assert services.message_deliver(message_id=message.pk) == "offline"
    assert Message.objects.get(pk=message.pk).status == Status.PENDING


def test_deliver_unknown_message_is_skipped(db):
    assert services.message_deliver(message_id=uuid.uuid4()) == "skipped"


def test_deliver_expired_message_fails_it(sender, mobile_user, redis):
    message = MessageFactory(
        sender=sender, recipient=mobile_user, ttl_seconds=1, expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert services.message_deliver(message_id=message.pk) == "expired"

    message.refresh_from_db()
    assert (message.status, message.failure_reason) == (Status.FAILED, "expired")
    assert message.dead_letter.reason == "expired"


def test_deliver_to_deactivated_recipient_dead_letters_at_once(sender, mobile_user, online):
    message = _send(sender, mobile_user)
    MobileUser.objects.filter(pk=mobile_user.pk).update(is_active=False)

    assert services.message_deliver(message_id=message.pk) == "failed"

    message.refresh_from_db()
    assert (message.status, message.failure_reason) == (Status.FAILED, "recipient deactivated")
    assert message.dead_letter.reason == "recipient deactivated"
    assert _receive(online, timeout=0.3) is None
    assert services.message_deliver(message_id=message.pk) == "skipped"
    assert DeadLetter.objects.count() == 1


def test_pending_message_in_backoff_is_not_delivered_early(sender, mobile_user, online):
    message = MessageFactory(
        sender=sender,
        recipient=mobile_user,
        status=Status.PENDING,
        next_attempt_at=timezone.now() + timedelta(minutes=1),
    )

    assert services.message_deliver(message_id=message.pk) == "not_due"

    assert Message.objects.get(pk=message.pk).status == Status.PENDING
    assert _receive(online, timeout=0.3) is None


# --- online -----------------------------------------------------------------------------------


def test_online_recipient_receives_frame_and_message_is_sent(sender, mobile_user, online, settings):
    message = _send(sender, mobile_user, content="hello there")
    before = timezone.now()

    assert services.message_deliver(message_id=message.pk) == "sent"

    event = _receive(online)
    assert event is not None
    [payload] = event_payloads(event)
    assert payload["id"] == str(message.pk)
    assert payload["seq"] == 1
    assert payload["content"] == "hello there"
    assert payload["kind"] == "one_way"
    assert payload["conversation_id"] is None
    assert payload["sender"] == {"type": "business", "id": sender.pk, "name": sender.name}
    message.refresh_from_db()
    assert message.status == Status.SENT
    timeout = timedelta(seconds=settings.MESSAGING_ACK_TIMEOUT_SECONDS)
    assert before + timeout <= message.next_attempt_at <= timezone.now() + timeout
    assert before <= message.sent_at <= timezone.now()
    assert _attempts(message) == [(Channel.WEBSOCKET, Outcome.SENT)]


def test_every_connection_of_the_recipient_gets_the_frame(sender, mobile_user, online):
    second = _connect(mobile_user.pk)
    message = _send(sender, mobile_user)

    services.message_deliver(message_id=message.pk)

    assert _delivered_ids(_receive(online)) == [str(message.pk)]
    assert _delivered_ids(_receive(second)) == [str(message.pk)]


def test_rerunning_delivery_of_a_sent_message_does_nothing(sender, mobile_user, online):
    message = _send(sender, mobile_user)
    services.message_deliver(message_id=message.pk)
    _receive(online)
    before = Message.objects.filter(pk=message.pk).values().get()

    assert services.message_deliver(message_id=message.pk) == "skipped"

    assert _receive(online, timeout=0.3) is None
    assert Message.objects.filter(pk=message.pk).values().get() == before
    assert DeliveryAttempt.objects.filter(message=message).count() == 1


def test_backlog_sends_due_pending_messages_in_seq_order(sender, mobile_user, redis):
    messages = [_send(sender, mobile_user, content=f"m{i}") for i in range(3)]
    for m in messages:
        services.message_deliver(message_id=m.pk)  # offline → pending
    channel = _connect(mobile_user.pk)

    assert services.recipient_deliver_backlog(recipient=Party.mobile(mobile_user.pk)) == 3

    event = _receive(channel)
    assert [p["seq"] for p in event_payloads(event)] == [1, 2, 3]
    assert set(Message.objects.values_list("status", flat=True)) == {Status.SENT}
    # Nothing left to send: a second run writes nothing.
    assert services.recipient_deliver_backlog(recipient=Party.mobile(mobile_user.pk)) == 0
    assert _receive(channel, timeout=0.3) is None


def test_backlog_for_offline_recipient_sends_nothing(sender, mobile_user, redis):
    message = _send(sender, mobile_user)
    services.message_deliver(message_id=message.pk)

    assert services.recipient_deliver_backlog(recipient=Party.mobile(mobile_user.pk)) == 0
    assert Message.objects.get(pk=message.pk).status == Status.PENDING


# --- acks and reads ---------------------------------------------------------------------------


@pytest.fixture
def sent_message(sender, mobile_user, online) -> Message:
    message = _send(sender, mobile_user)
    services.message_deliver(message_id=message.pk)
    _receive(online)
    return message


def test_ack_marks_delivered_and_closes_the_attempt(sent_message, mobile_user):
    acked = services.messages_acknowledge(
        recipient=Party.mobile(mobile_user.pk), message_ids=[str(sent_message.pk)]
    )

    assert acked == [sent_message.pk]
    sent_message.refresh_from_db()
    assert sent_message.status == Status.DELIVERED
    assert sent_message.delivered_at is not None
    assert sent_message.next_attempt_at is None
    assert _attempts(sent_message) == [(Channel.WEBSOCKET, Outcome.ACKED)]


def test_ack_is_idempotent(sent_message, mobile_user):
    services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=[str(sent_message.pk)])
    before = Message.objects.filter(pk=sent_message.pk).values().get()

    again = services.messages_acknowledge(
        recipient=Party.mobile(mobile_user.pk), message_ids=[str(sent_message.pk)]
    )

    assert again == []
    assert Message.objects.filter(pk=sent_message.pk).values().get() == before
    assert DeliveryAttempt.objects.filter(message=sent_message).count() == 1


def test_ack_of_another_recipients_message_is_ignored(sender, sent_message, stranger, mobile_user):
    theirs = MessageFactory(sender=sender, recipient=stranger, status=Status.SENT)

    acked = services.messages_acknowledge(
        recipient=Party.mobile(mobile_user.pk), message_ids=[str(theirs.pk), str(sent_message.pk)]
    )

    assert acked == [sent_message.pk]
    assert Message.objects.get(pk=theirs.pk).status == Status.SENT
    assert (
        services.messages_mark_read(recipient=Party.mobile(mobile_user.pk), message_ids=[str(theirs.pk)])
        == []
    )
    assert Message.objects.get(pk=theirs.pk).status == Status.SENT


@pytest.mark.parametrize("bad", ["nope", "", None, 42, {"id": 1}, ["x"], "12345678-1234"])
def test_malformed_ids_are_ignored(bad, sent_message, mobile_user):
    acked = services.messages_acknowledge(
        recipient=Party.mobile(mobile_user.pk), message_ids=[bad, str(sent_message.pk)]
    )

    assert acked == [sent_message.pk]
    assert services.messages_mark_read(recipient=Party.mobile(mobile_user.pk), message_ids=[bad]) == []


def test_read_without_ack_sets_delivered_too(sent_message, mobile_user):
    assert services.messages_mark_read(
        recipient=Party.mobile(mobile_user.pk), message_ids=[sent_message.pk]
    ) == [sent_message.pk]

    sent_message.refresh_from_db()
    assert sent_message.status == Status.READ
    assert sent_message.read_at is not None
    assert sent_message.delivered_at == sent_message.read_at


def test_read_after_ack_keeps_delivered_at_and_read_is_idempotent(sent_message, mobile_user):
    services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=[sent_message.pk])
    delivered_at = Message.objects.get(pk=sent_message.pk).delivered_at

    services.messages_mark_read(recipient=Party.mobile(mobile_user.pk), message_ids=[sent_message.pk])
    read_at = Message.objects.get(pk=sent_message.pk).read_at
    assert (
        services.messages_mark_read(recipient=Party.mobile(mobile_user.pk), message_ids=[sent_message.pk])
        == []
    )

    stored = Message.objects.get(pk=sent_message.pk)
    assert (stored.status, stored.delivered_at, stored.read_at) == (Status.READ, delivered_at, read_at)
    assert delivered_at <= read_at


def test_ack_after_read_does_not_move_back(sent_message, mobile_user):
    services.messages_mark_read(recipient=Party.mobile(mobile_user.pk), message_ids=[sent_message.pk])
    before = Message.objects.filter(pk=sent_message.pk).values().get()

    assert (
        services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=[sent_message.pk])
        == []
    )

    assert Message.objects.filter(pk=sent_message.pk).values().get() == before


def test_ack_of_failed_message_does_not_revive_it(sent_message, mobile_user):
    services.messages_fail(Message.objects.filter(pk=sent_message.pk), reason="gave up")

    assert (
        services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=[sent_message.pk])
        == []
    )

    assert Message.objects.get(pk=sent_message.pk).status == Status.FAILED


def test_ack_overtaking_release_still_delivers(sent_message, mobile_user):
    """A connection dropped (sent → pending) but the device had acked: the ack wins."""
    services.messages_release_unacked(recipients=[Party.mobile(mobile_user.pk)], reason="connection closed")
    assert Message.objects.get(pk=sent_message.pk).status == Status.PENDING

    assert services.messages_acknowledge(
        recipient=Party.mobile(mobile_user.pk), message_ids=[sent_message.pk]
    ) == [sent_message.pk]
    assert Message.objects.get(pk=sent_message.pk).status == Status.DELIVERED


# --- strict ordering --------------------------------------------------------------------------


@pytest.fixture
def strict(settings):
    settings.MESSAGING_ORDERING = "strict"


def test_strict_mode_holds_the_next_message_until_the_first_is_acked(strict, sender, mobile_user, online):
    first, second = _send(sender, mobile_user, content="first"), _send(sender, mobile_user, content="second")

    assert services.message_deliver(message_id=first.pk) == "sent"
    assert services.message_deliver(message_id=second.pk) == "held"

    assert _delivered_ids(_receive(online)) == [str(first.pk)]
    assert _receive(online, timeout=0.3) is None
    assert Message.objects.get(pk=second.pk).status == Status.PENDING
    # While the first is in flight the backlog sends nothing.
    assert services.recipient_deliver_backlog(recipient=Party.mobile(mobile_user.pk)) == 0
    assert _receive(online, timeout=0.3) is None

    services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=[first.pk])

    assert services.recipient_deliver_backlog(recipient=Party.mobile(mobile_user.pk)) == 1
    assert _delivered_ids(_receive(online)) == [str(second.pk)]
    assert Message.objects.get(pk=second.pk).status == Status.SENT
    assert services.recipient_deliver_backlog(recipient=Party.mobile(mobile_user.pk)) == 0


def test_strict_mode_in_one_chunk_sends_each_recipients_first_and_holds_the_rest(
    strict, sender, mobile_user, stranger, online
):
    # The relay's chunk holds several messages of one recipient: the chunk is the one delivery
    # path, and strict ordering is its rule (not a per-message path of its own).
    mine = [_send(sender, mobile_user, content=f"m{i}") for i in range(3)]
    theirs = [_send(sender, stranger, content=f"s{i}") for i in range(2)]  # offline

    report = services.messages_deliver_chunk(message_ids=[str(m.pk) for m in mine + theirs])

    assert (report.sent, report.offline, report.held) == (1, 1, 3)
    assert _delivered_ids(_receive(online)) == [str(mine[0].pk)]
    assert _receive(online, timeout=0.3) is None
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert [statuses[m.pk] for m in mine] == [Status.SENT, Status.PENDING, Status.PENDING]
    assert [statuses[m.pk] for m in theirs] == [Status.PENDING, Status.PENDING]
    # Held ones wait for the ack of the first: a rerun of the chunk sends nothing more.
    again = services.messages_deliver_chunk(message_ids=[str(m.pk) for m in mine])
    assert (again.sent, again.held) == (0, 2)
    assert _receive(online, timeout=0.3) is None

    services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=[mine[0].pk])
    assert services.recipient_deliver_backlog(recipient=Party.mobile(mobile_user.pk)) == 1
    assert _delivered_ids(_receive(online)) == [str(mine[1].pk)]


def test_strict_mode_backlog_sends_one_at_a_time(strict, sender, mobile_user, redis):
    messages = [_send(sender, mobile_user) for _ in range(3)]
    for m in messages:
        services.message_deliver(message_id=m.pk)  # offline → pending, or held behind the first
    channel = _connect(mobile_user.pk)

    sent_order = []
    for _ in messages:
        assert services.recipient_deliver_backlog(recipient=Party.mobile(mobile_user.pk)) == 1
        [message_id] = _delivered_ids(_receive(channel))
        sent_order.append(message_id)
        assert services.recipient_deliver_backlog(recipient=Party.mobile(mobile_user.pk)) == 0
        services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=[message_id])

    assert sent_order == [str(m.pk) for m in messages]
    assert set(Message.objects.values_list("status", flat=True)) == {Status.DELIVERED}


def test_channel_layer_down_returns_message_to_pending_and_raises_for_retry(
    sender, mobile_user, online, monkeypatch
):
    message = _send(sender, mobile_user)

    def unreachable(events):
        raise ConnectionError("channel layer down")

    monkeypatch.setattr(bridge, "group_send_many", unreachable)
    with pytest.raises(ConnectionError):
        services.message_deliver(message_id=message.pk)

    message.refresh_from_db()
    assert message.status == Status.PENDING
    assert message.next_attempt_at is None  # due again as soon as the task retries
    assert _attempts(message) == [(Channel.WEBSOCKET, Outcome.ERROR)]
    assert DeadLetter.objects.count() == 0


def test_ack_arriving_before_the_task_returns_finds_the_attempt_recorded(
    sender, mobile_user, online, monkeypatch
):
    """The device may ack while group_send is still returning: the bookkeeping is already there."""
    message = _send(sender, mobile_user)
    real_send = bridge.group_send_many

    def send_then_ack(events):
        outcomes = real_send(events)
        services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=[str(message.pk)])
        return outcomes

    monkeypatch.setattr(bridge, "group_send_many", send_then_ack)
    assert services.message_deliver(message_id=message.pk) == "sent"

    message.refresh_from_db()
    assert message.status == Status.DELIVERED
    assert message.sent_at is not None and message.sent_at <= message.delivered_at
    assert _attempts(message) == [(Channel.WEBSOCKET, Outcome.ACKED)]


def test_a_failed_group_send_returns_only_its_recipients_messages_to_pending(
    sender, mobile_user, stranger, redis, monkeypatch
):
    for user in (mobile_user, stranger):
        presence.connection_seen(party=Party.mobile(user.pk), channel_name=f"test.{user.pk}")
    first, second = _send(sender, mobile_user), _send(sender, stranger)
    real_send = bridge.group_send_many

    def first_group_fails(events):
        return [ConnectionError("lost"), *real_send(events[1:])]

    monkeypatch.setattr(bridge, "group_send_many", first_group_fails)
    with pytest.raises(ConnectionError):
        services.messages_write(
            outgoing.encode(
                outgoing.rows(
                    Message.objects.filter(pk__in=[first.pk, second.pk]).order_by("seq", "recipient_id")
                )
            )[0]
        )

    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses == {first.pk: Status.PENDING, second.pk: Status.SENT}
    assert _attempts(first) == [(Channel.WEBSOCKET, Outcome.ERROR)]
    assert _attempts(second) == [(Channel.WEBSOCKET, Outcome.SENT)]
