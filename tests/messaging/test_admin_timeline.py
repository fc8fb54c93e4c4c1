"""The admin's message timeline and broadcast pages, driven through Django's test client.

Histories are made by the real code paths: lifecycle transitions, the push service (log
backend), socket writes, receipts, failure with its dead letter, broadcast expansion.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse

from apps.accounts.party import Party
from apps.devices.models import DeviceToken
from apps.devices.services import push_send
from apps.messaging import lifecycle, services, timeline
from apps.messaging.models import Message, Outcome, Status
from tests.factories import MessageFactory, MobileUserFactory, SenderFactory


def timeline_of(client, message: Message) -> list[tuple[str, str]]:
    """Return the (event, detail) rows of the message's admin page, in page order."""
    page = client.get(reverse("admin:messaging_message_change", args=[message.pk]))
    assert page.status_code == 200
    table = re.search(r'<table class="message-timeline">.*?</table>', page.content.decode(), re.S).group(0)
    cells = re.findall(r'<tr data-what="[^"]*"><td>[^<]*</td><td>([^<]*)</td><td>([^<]*)</td></tr>', table)
    return cells


def test_a_delivered_message_shows_its_whole_history_in_time_order(admin_client, redis):
    message = MessageFactory(status=Status.QUEUED)
    DeviceToken.objects.create(mobile_user=message.recipient, token="android-token-1", platform="android")
    # Offline: it waits, and a push goes to the Android device.
    assert lifecycle.transition_one(message.pk, to=Status.PENDING)
    push_send(message_id=message.pk)
    # Online again: written to the socket, acked, read.
    services.messages_mark_sent([message.pk])
    services.messages_acknowledge(recipient=Party.mobile(message.recipient_id), message_ids=[message.pk])
    services.messages_mark_read(recipient=Party.mobile(message.recipient_id), message_ids=[message.pk])

    events = timeline_of(admin_client, message)

    assert [what for what, _ in events] == [
        "created",
        "push",
        "delivery attempt",
        "sent",
        "delivered",
        "read",
    ]
    assert events[0][1] == f"one_way, priority normal, seq {message.seq}"
    assert events[1][1] == "fcm: accepted by the provider"
    assert events[2][1] == "websocket: Acked"


def test_a_failed_message_shows_its_attempts_failure_and_dead_letter(admin_client, redis):
    message = MessageFactory(status=Status.QUEUED, retry_count=6)
    services.messages_mark_sent([message.pk])
    services.messages_fail(
        Message.objects.filter(pk=message.pk),
        reason="no ack after 7 attempts",
        attempt_outcome=Outcome.TIMEOUT,
    )

    events = timeline_of(admin_client, message)

    whats = [what for what, _ in events]
    assert whats[0] == "created"
    assert whats[-2:] == ["failed", "dead-lettered"]
    assert "delivery attempt" in whats
    assert dict(events)["dead-lettered"] == "no ack after 7 attempts"


def test_other_apps_add_their_events_through_a_timeline_source(admin_client, redis, monkeypatch):
    monkeypatch.setattr(timeline, "timeline_sources", list(timeline.timeline_sources))
    message = MessageFactory(status=Status.QUEUED)

    def webhook_events(msg):
        yield timeline.TimelineEvent(msg.created_at + timedelta(seconds=1), "webhook", "message.sent → 200")

    timeline.timeline_source_register(webhook_events)
    timeline.timeline_source_register(webhook_events)  # idempotent

    events = timeline_of(admin_client, message)

    assert events == [(events[0][0], events[0][1]), ("webhook", "message.sent → 200")]


# --- broadcasts ----------------------------------------------------------------------------


@pytest.fixture
def broadcast(db, redis):
    """A broadcast to three users, expanded, one of its messages delivered and one failed."""
    sender = SenderFactory(permissions=["send_broadcast"])
    users = MobileUserFactory.create_batch(3)
    made = services.broadcast_create(sender=sender, recipient_ids=[u.pk for u in users], content="Sale today")
    cursor = 0
    while cursor is not None:
        cursor = services.broadcast_expand_chunk(broadcast_id=made.pk, after=cursor)
    first, second, _ = Message.objects.filter(broadcast=made).order_by("recipient_id")
    services.messages_mark_sent([first.pk, second.pk])
    services.messages_acknowledge(recipient=Party.mobile(first.recipient_id), message_ids=[first.pk])
    services.messages_fail(Message.objects.filter(pk=second.pk), reason="gone", attempt_outcome=Outcome.ERROR)
    made.refresh_from_db()
    return made


def test_broadcast_list_and_page_show_progress_read_only(admin_client, broadcast):
    listing = admin_client.get(reverse("admin:messaging_broadcast_changelist"))
    assert listing.status_code == 200
    assert "3 / 3 (100 %)" in listing.content.decode()
    assert reverse("admin:messaging_broadcast_add") not in listing.content.decode()

    page = admin_client.get(reverse("admin:messaging_broadcast_change", args=[broadcast.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "queued (not yet delivered) 1 · delivered 1 · failed 1" in html
    assert 'name="_save"' not in html  # nothing to edit

    messages = admin_client.get(
        reverse("admin:messaging_message_changelist") + f"?broadcast__id__exact={broadcast.pk}"
    )
    assert messages.status_code == 200
    assert messages.context["cl"].result_count == 3

    assert (
        admin_client.post(reverse("admin:messaging_broadcast_delete", args=[broadcast.pk])).status_code == 403
    )


def test_broadcast_search_by_id_and_by_anything_else(admin_client, broadcast):
    url = reverse("admin:messaging_broadcast_changelist")

    assert admin_client.get(url, {"q": str(broadcast.pk)}).context["cl"].result_count == 1
    assert admin_client.get(url, {"q": "not-a-uuid"}).context["cl"].result_count == 0
    assert admin_client.get(url, {"q": broadcast.sender.username}).context["cl"].result_count == 1


def test_staff_without_the_view_permission_cannot_see_broadcasts(client, broadcast):
    client.force_login(SenderFactory(is_staff=True))

    assert client.get(reverse("admin:messaging_broadcast_changelist")).status_code == 403
