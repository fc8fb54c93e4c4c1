"""The push fallback end to end with the real firebase-admin and aioapns clients against the
local FCM and APNS servers: offline → window → one push per device, coalescing, quiet hours,
push off, and a push never delivering a message (SPEC.md section 5)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from apps.accounts import presence
from apps.accounts.party import Party
from apps.devices import services as push
from apps.devices.models import DeviceToken, PushHold, PushPreferences
from apps.devices.services import device_register, preferences_update
from apps.messaging import services
from apps.messaging.models import Channel, DeliveryAttempt, Message, Outcome, Status
from tests.sockets import socket_open, socket_receive

from .conftest import queued_tasks

ANDROID = "fcm-registration-token-android-1"
IOS = "a1" * 32
WINDOW_TASK = "apps.devices.tasks.push_window_end"
FIRST_TASK = "apps.devices.tasks.push_first"
PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def devices(recipient):
    android, _ = device_register(mobile_user=recipient, token=ANDROID, platform="android")
    ios, _ = device_register(mobile_user=recipient, token=IOS, platform="ios")
    return android, ios


def send_offline(sender, recipient, capture, content: str = "hello", **fields) -> Message:
    """Send a message and run its delivery while the recipient is offline, commit hooks included."""
    with capture(execute=True):
        message = services.message_send(
            sender=sender, recipient_phone_number=recipient.phone_number, content=content, **fields
        )
    with capture(execute=True):
        assert services.message_deliver(message_id=message.pk) == "offline"
    return message


def push_attempts(message: Message) -> list[tuple[str, str]]:
    rows = DeliveryAttempt.objects.filter(message=message).exclude(channel=Channel.WEBSOCKET)
    return sorted(rows.values_list("channel", "outcome"))


def test_offline_recipient_with_android_and_ios_gets_one_push_each(
    providers, sender, recipient, devices, redis, django_capture_on_commit_callbacks
):
    message = send_offline(
        sender, recipient, django_capture_on_commit_callbacks, content="x" * 150, subject="Invoice"
    )

    [window] = queued_tasks(redis, WINDOW_TASK)
    assert window.args == [recipient.pk]
    assert push.push_window_close(recipient_id=recipient.pk) == "sent"

    [fcm] = providers.fcm.to(ANDROID)
    assert fcm.message["notification"] == {"title": "Invoice", "body": "x" * 100}
    assert fcm.message["data"] == {
        "message_id": str(message.pk),
        "conversation_id": "",
        "kind": "one_way",
        "count": "1",
    }
    [apns] = providers.apns.to(IOS)
    assert apns.payload["aps"]["alert"] == {"title": "Invoice", "body": "x" * 100}
    assert apns.payload["message_id"] == str(message.pk)
    assert apns.headers["apns-topic"] == "com.example.messaging"
    assert len(providers.fcm.received) == len(providers.apns.received) == 1
    assert push_attempts(message) == [(Channel.APNS, Outcome.SENT), (Channel.FCM, Outcome.SENT)]
    # A push is a wake-up call: the message still waits for the WebSocket ack.
    message.refresh_from_db()
    assert message.status == Status.PENDING and message.delivered_at is None
    assert all(d.last_used_at for d in DeviceToken.objects.all())


def test_title_is_the_sender_name_without_a_subject(
    providers, sender, recipient, devices, django_capture_on_commit_callbacks
):
    sender.display_name = "Acme Bank"
    sender.save()
    send_offline(sender, recipient, django_capture_on_commit_callbacks, content="Your code is 1234")

    push.push_window_close(recipient_id=recipient.pk)

    assert providers.fcm.to(ANDROID)[0].message["notification"]["title"] == "Acme Bank"


def test_burst_of_twenty_messages_gives_one_coalesced_push_with_the_newest_and_the_count(
    providers, sender, recipient, devices, redis, django_capture_on_commit_callbacks
):
    messages = [
        send_offline(sender, recipient, django_capture_on_commit_callbacks, content=f"message {i}")
        for i in range(20)
    ]

    # One window: the first message's push at once, one more at its end for the other 19.
    assert len(queued_tasks(redis, FIRST_TASK)) == len(queued_tasks(redis, WINDOW_TASK)) == 1
    assert push.push_window_close(recipient_id=recipient.pk) == "sent"

    [fcm] = providers.fcm.to(ANDROID)
    assert fcm.message["data"]["message_id"] == str(messages[-1].pk)
    assert fcm.message["data"]["count"] == "20"
    assert fcm.message["notification"]["body"] == "message 19"
    assert len(providers.apns.to(IOS)) == 1
    assert len(providers.fcm.received) + len(providers.apns.received) == 2
    assert DeliveryAttempt.objects.filter(channel__in=[Channel.FCM, Channel.APNS]).count() == 2


def test_window_opens_once_and_again_after_it_expired(redis, recipient, settings):
    settings.PUSH_COALESCE_SECONDS = 10

    assert push.push_schedule(recipient_id=recipient.pk) is True
    assert push.push_schedule(recipient_id=recipient.pk) is False
    assert 0 < redis.ttl(f"push:window:{recipient.pk}") <= 10
    # The first push goes at once (no eta); the window's end is due after it.
    [first] = queued_tasks(redis, FIRST_TASK)
    assert (first.args, first.eta) == ([recipient.pk], None)
    [task] = queued_tasks(redis, WINDOW_TASK)
    assert task.eta is not None and (task.eta - timezone.now()).total_seconds() > 8

    redis.delete(f"push:window:{recipient.pk}")  # what the expiry does at the end of the window
    assert push.push_schedule(recipient_id=recipient.pk) is True
    assert len(queued_tasks(redis, FIRST_TASK)) == len(queued_tasks(redis, WINDOW_TASK)) == 2


def test_the_end_of_a_window_pushes_again_only_if_messages_arrived_during_it(
    providers, sender, recipient, devices, redis, django_capture_on_commit_callbacks
):
    first = send_offline(sender, recipient, django_capture_on_commit_callbacks, content="first")
    assert push.push_window_close(recipient_id=recipient.pk) == "sent"  # push_first's work
    assert push.push_window_trail(recipient_id=recipient.pk) == "quiet"  # nothing came after it

    redis.delete(f"push:window:{recipient.pk}")
    second = send_offline(sender, recipient, django_capture_on_commit_callbacks, content="second")
    push.push_window_close(recipient_id=recipient.pk)
    later = [
        send_offline(sender, recipient, django_capture_on_commit_callbacks, content=f"later {n}")
        for n in range(3)
    ]

    assert push.push_window_trail(recipient_id=recipient.pk) == "sent"
    assert push.push_window_trail(recipient_id=recipient.pk) == "quiet"  # once per window
    pushed = [r.message["data"]["message_id"] for r in providers.fcm.to(ANDROID)]
    assert pushed == [str(first.pk), str(second.pk), str(later[-1].pk)]
    # The count is of everything still undelivered, the first two included.
    assert providers.fcm.to(ANDROID)[-1].message["data"]["count"] == "5"


def test_a_trailing_push_is_dropped_when_everything_was_acked_first(
    providers, sender, recipient, devices, redis, django_capture_on_commit_callbacks
):
    messages = [send_offline(sender, recipient, django_capture_on_commit_callbacks) for _ in range(3)]
    push.push_window_close(recipient_id=recipient.pk)
    services.messages_acknowledge(recipient=Party.mobile(recipient.pk), message_ids=[m.pk for m in messages])

    assert push.push_window_trail(recipient_id=recipient.pk) == "nothing"
    assert len(providers.fcm.to(ANDROID)) == 1


def test_no_push_when_everything_was_acked_before_the_window_closed(
    providers, sender, recipient, devices, django_capture_on_commit_callbacks
):
    messages = [send_offline(sender, recipient, django_capture_on_commit_callbacks) for _ in range(3)]
    services.messages_acknowledge(recipient=Party.mobile(recipient.pk), message_ids=[m.pk for m in messages])

    assert push.push_window_close(recipient_id=recipient.pk) == "nothing"
    assert providers.fcm.received == [] and providers.apns.received == []
    assert not DeliveryAttempt.objects.filter(channel__in=[Channel.FCM, Channel.APNS]).exists()


def test_no_push_when_the_recipient_came_back_online(
    providers, sender, recipient, devices, django_capture_on_commit_callbacks
):
    send_offline(sender, recipient, django_capture_on_commit_callbacks)
    presence.connection_seen(party=Party.mobile(recipient.pk), channel_name="test-socket")

    assert push.push_window_close(recipient_id=recipient.pk) == "online"
    assert providers.fcm.received == [] and providers.apns.received == []


def test_inactive_tokens_get_nothing(
    providers, sender, recipient, devices, django_capture_on_commit_callbacks
):
    android, _ = devices
    DeviceToken.objects.filter(pk=android.pk).update(is_active=False)
    send_offline(sender, recipient, django_capture_on_commit_callbacks)

    push.push_window_close(recipient_id=recipient.pk)

    assert providers.fcm.received == []
    assert len(providers.apns.to(IOS)) == 1


def _quiet_at_night(recipient) -> PushPreferences:
    return preferences_update(
        mobile_user=recipient, quiet_hours_start=time(22), quiet_hours_end=time(7), timezone="Europe/Paris"
    )


def test_quiet_hours_hold_the_push_then_release_it_when_they_end(
    providers, sender, recipient, devices, django_capture_on_commit_callbacks
):
    _quiet_at_night(recipient)
    message = send_offline(sender, recipient, django_capture_on_commit_callbacks)
    night = datetime(2026, 3, 10, 23, 30, tzinfo=PARIS)

    assert push.push_window_close(recipient_id=recipient.pk, now=night) == "held"
    assert providers.fcm.received == [] and providers.apns.received == []
    assert PushHold.objects.filter(mobile_user=recipient).exists()
    assert push.push_holds_release(now=datetime(2026, 3, 11, 6, 59, tzinfo=PARIS)) == 0
    assert providers.fcm.received == []

    assert push.push_holds_release(now=datetime(2026, 3, 11, 7, 0, tzinfo=PARIS)) == 1

    assert [r.message["data"]["message_id"] for r in providers.fcm.received] == [str(message.pk)]
    assert len(providers.apns.to(IOS)) == 1
    assert not PushHold.objects.exists()
    assert push.push_holds_release(now=datetime(2026, 3, 11, 8, 0, tzinfo=PARIS)) == 0  # sent once


def test_a_held_push_is_dropped_if_the_messages_were_delivered_meanwhile(
    providers, sender, recipient, devices, django_capture_on_commit_callbacks
):
    _quiet_at_night(recipient)
    message = send_offline(sender, recipient, django_capture_on_commit_callbacks)
    push.push_window_close(recipient_id=recipient.pk, now=datetime(2026, 3, 10, 23, 0, tzinfo=PARIS))
    services.messages_acknowledge(recipient=Party.mobile(recipient.pk), message_ids=[message.pk])

    push.push_holds_release(now=datetime(2026, 3, 11, 9, 0, tzinfo=PARIS))

    assert providers.fcm.received == [] and providers.apns.received == []
    assert not PushHold.objects.exists()


def test_high_priority_overrides_quiet_hours(
    providers, sender, recipient, devices, django_capture_on_commit_callbacks
):
    _quiet_at_night(recipient)
    send_offline(sender, recipient, django_capture_on_commit_callbacks, priority="high")
    night = datetime(2026, 3, 10, 23, 30, tzinfo=PARIS)

    assert push.push_window_close(recipient_id=recipient.pk, now=night) == "sent"
    assert len(providers.fcm.to(ANDROID)) == 1
    assert providers.fcm.to(ANDROID)[0].message["android"]["priority"] == "high"
    assert providers.apns.to(IOS)[0].headers["apns-priority"] == "10"
    assert not PushHold.objects.exists()


def test_quiet_hours_follow_the_users_time_zone(recipient):
    preferences = _quiet_at_night(recipient)

    assert preferences.in_quiet_hours(datetime(2026, 7, 1, 21, 30, tzinfo=UTC))  # 23:30 in Paris
    assert not preferences.in_quiet_hours(datetime(2026, 7, 1, 5, 0, tzinfo=UTC))  # 07:00 in Paris
    same_day = preferences_update(mobile_user=recipient, quiet_hours_start=time(12), quiet_hours_end=time(14))
    assert same_day.in_quiet_hours(datetime(2026, 7, 1, 11, 0, tzinfo=UTC))  # 13:00 in Paris
    assert not same_day.in_quiet_hours(datetime(2026, 7, 1, 13, 0, tzinfo=UTC))


def _connect(user_id: int) -> str:
    return socket_open(user_id)


def test_push_disabled_sends_nothing_and_the_message_is_still_delivered_on_reconnect(
    providers, sender, recipient, devices, django_capture_on_commit_callbacks
):
    preferences_update(mobile_user=recipient, push_enabled=False)
    message = send_offline(sender, recipient, django_capture_on_commit_callbacks)

    assert push.push_window_close(recipient_id=recipient.pk) == "held"
    assert push.push_holds_release() == 0
    assert providers.fcm.received == [] and providers.apns.received == []
    assert not DeliveryAttempt.objects.filter(channel__in=[Channel.FCM, Channel.APNS]).exists()

    channel = _connect(recipient.pk)
    assert services.recipient_deliver_backlog(recipient=Party.mobile(recipient.pk)) == 1
    event = socket_receive(channel)
    assert [m["id"] for m in event["messages"]] == [str(message.pk)]
    services.messages_acknowledge(recipient=Party.mobile(recipient.pk), message_ids=[message.pk])
    message.refresh_from_db()
    assert message.status == Status.DELIVERED


def test_log_backend_sends_nothing_and_records_the_attempts(
    settings, redis, sender, recipient, devices, django_capture_on_commit_callbacks, caplog
):
    settings.PUSH_BACKEND = "log"
    message = send_offline(sender, recipient, django_capture_on_commit_callbacks)

    with caplog.at_level("INFO", logger="apps.devices.backends.log"):
        assert push.push_window_close(recipient_id=recipient.pk) == "sent"

    assert [r.message for r in caplog.records if r.name == "apps.devices.backends.log"] == ["push.log"] * 2
    assert push_attempts(message) == [(Channel.APNS, Outcome.SENT), (Channel.FCM, Outcome.SENT)]
    message.refresh_from_db()
    assert message.status == Status.PENDING


def test_tasks_run_the_window_the_retry_and_the_hold_release(
    providers, sender, recipient, devices, django_capture_on_commit_callbacks
):
    from apps.devices import tasks

    message = send_offline(sender, recipient, django_capture_on_commit_callbacks)
    android, _ = devices

    assert tasks.push_first.run(recipient.pk) == "sent"
    assert tasks.push_window_end.run(recipient.pk) == "quiet"  # nothing arrived after the first
    assert tasks.push_retry.run(str(message.pk), [android.pk], 2) == 1
    assert tasks.release_push_holds.run() == 0

    assert len(providers.fcm.to(ANDROID)) == 2
    assert len(providers.apns.to(IOS)) == 1


def test_re_enabling_push_releases_the_held_push_if_still_undelivered(
    providers, sender, recipient, devices, django_capture_on_commit_callbacks
):
    preferences_update(mobile_user=recipient, push_enabled=False)
    message = send_offline(sender, recipient, django_capture_on_commit_callbacks)
    assert push.push_window_close(recipient_id=recipient.pk) == "held"

    preferences_update(mobile_user=recipient, push_enabled=True)

    assert push.push_holds_release() == 1
    assert [r.message["data"]["message_id"] for r in providers.fcm.received] == [str(message.pk)]
    assert len(providers.apns.to(IOS)) == 1


def test_a_recipient_without_active_devices_gets_no_push_and_no_attempt(
    providers, sender, recipient, django_capture_on_commit_callbacks
):
    message = send_offline(sender, recipient, django_capture_on_commit_callbacks)

    assert push.push_window_close(recipient_id=recipient.pk) == "no_devices"
    assert push_attempts(message) == []


def test_connection_lost_with_unacked_messages_opens_a_push_window(
    providers, sender, recipient, devices, redis, django_capture_on_commit_callbacks
):
    """Messages written to a socket that then died go back to pending: the phone is woken up."""
    message = services.message_send(
        sender=sender, recipient_phone_number=recipient.phone_number, content="hi"
    )
    services.messages_mark_sent([message.pk])
    assert queued_tasks(redis, WINDOW_TASK) == []

    with django_capture_on_commit_callbacks(execute=True):
        released = services.messages_release_unacked(
            recipients=[Party.mobile(recipient.pk)], reason="connection closed"
        )

    assert released == [message.pk]
    [window] = queued_tasks(redis, WINDOW_TASK)
    assert window.args == [recipient.pk]
    assert push.push_window_close(recipient_id=recipient.pk) == "sent"
    assert len(providers.fcm.to(ANDROID)) == len(providers.apns.to(IOS)) == 1


def test_releasing_nothing_opens_no_push_window(recipient, redis, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            services.messages_release_unacked(recipients=[Party.mobile(recipient.pk)], reason="stale") == []
        )
    assert queued_tasks(redis, WINDOW_TASK) == []
