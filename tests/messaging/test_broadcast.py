"""Broadcasts: accepted fast, expanded in idempotent chunks, each recipient reached exactly once."""

from __future__ import annotations

from collections import Counter

import pytest

from apps.accounts.models import MobileUser
from apps.messaging import services
from apps.messaging.models import Broadcast, BroadcastStatus, Message, Status
from tests.factories import MobileUserFactory, SenderFactory
from tests.messaging.test_send import DUE_TASK, UNKNOWN_PHONE, dispatched_ids, queued_tasks

URL = "/api/v1/messages/broadcast/"
EXPAND_TASK = "apps.messaging.tasks.expand_broadcast"


@pytest.fixture
def broadcaster(db):
    return SenderFactory(permissions=["send_broadcast"])


@pytest.fixture
def broadcaster_client(broadcaster):
    from tests.conftest import client_for

    return client_for(broadcaster)


def _users(count: int) -> list[MobileUser]:
    return MobileUser.objects.bulk_create(
        [MobileUser(phone_number=f"+1650555{i:04d}", name=f"u{i}") for i in range(count)]
    )


def expand_all(*, broadcast_id) -> int:
    """Expand a whole broadcast in this process, chunk after chunk, as the chained tasks do."""
    chunks = 0
    cursor = Broadcast.objects.values_list("expanded_through", flat=True).get(pk=broadcast_id)
    while cursor is not None:
        cursor = services.broadcast_expand_chunk(broadcast_id=broadcast_id, after=cursor)
        chunks += 1
    return chunks


def _run_expansion(broadcast_id, capture) -> None:
    """Expand the broadcast chunk by chunk as the chained tasks would, with their commits' callbacks."""
    with capture(execute=True):
        expand_all(broadcast_id=broadcast_id)


def test_broadcast_to_five_thousand_users_creates_and_dispatches_exactly_one_message_each_even_when_run_twice(
    broadcaster, redis, settings, django_capture_on_commit_callbacks
):
    settings.MESSAGING_BROADCAST_CHUNK = 1000
    users = _users(5000)
    inactive = users[17]
    MobileUser.objects.filter(pk=inactive.pk).update(is_active=False)
    with django_capture_on_commit_callbacks(execute=True):
        broadcast = services.broadcast_create(
            sender=broadcaster, recipient_ids=None, content="sale", priority="low"
        )
    assert broadcast.total == 4999
    # The first expansion task was enqueued after commit; the API did not create any message.
    assert [args for name, args in queued_tasks(redis, "default") if name == EXPAND_TASK] == [
        [str(broadcast.pk), 0]
    ]
    assert Message.objects.count() == 0

    _run_expansion(broadcast.pk, django_capture_on_commit_callbacks)
    dispatched = dispatched_ids(redis, "low")
    tasks = queued_tasks(redis, "low")
    _run_expansion(broadcast.pk, django_capture_on_commit_callbacks)

    messages = Message.objects.filter(broadcast=broadcast)
    assert messages.count() == 4999
    per_recipient = Counter(messages.values_list("recipient_id", flat=True))
    assert set(per_recipient.values()) == {1}
    assert set(per_recipient) == {u.pk for u in users} - {inactive.pk}
    assert set(messages.values_list("seq", flat=True)) == {1}
    assert set(messages.values_list("status", "priority")) == {(Status.QUEUED, "low")}
    # Every message waits for the low lane's delivery task, once; the re-run added nothing.
    assert len(dispatched) == 4999 and set(dispatched) == {
        str(pk) for pk in messages.values_list("pk", flat=True)
    }
    assert {name for name, _ in tasks} == {DUE_TASK}
    assert dispatched_ids(redis, "low") == dispatched
    # Besides the first expansion task, one per full chunk followed it; the chunks went to "low".
    expands = [args for name, args in queued_tasks(redis, "default") if name == EXPAND_TASK]
    assert [after for _, after in expands] == [0] + [users[i].pk for i in (1000, 2000, 3000, 4000)]
    assert {name for name, _ in queued_tasks(redis, "default")} == {EXPAND_TASK}
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.expanded) == (BroadcastStatus.EXPANDED, 4999)
    assert MobileUser.objects.filter(last_seq__gt=1).count() == 0


def test_a_duplicated_or_stale_chunk_task_creates_nothing(broadcaster, redis, settings):
    settings.MESSAGING_BROADCAST_CHUNK = 2
    users = _users(5)
    broadcast = services.broadcast_create(
        sender=broadcaster, recipient_ids=[u.pk for u in users], content="x"
    )

    assert services.broadcast_expand_chunk(broadcast_id=broadcast.pk, after=0) == users[1].pk
    # The same task delivered twice: its range is taken, nothing more is created.
    assert services.broadcast_expand_chunk(broadcast_id=broadcast.pk, after=0) is None
    assert Message.objects.count() == 2
    assert services.broadcast_expand_chunk(broadcast_id=broadcast.pk, after=users[1].pk) == users[3].pk
    assert services.broadcast_expand_chunk(broadcast_id=broadcast.pk, after=users[3].pk) is None
    assert services.broadcast_expand_chunk(broadcast_id=broadcast.pk, after=users[3].pk) is None

    assert Message.objects.count() == 5
    broadcast.refresh_from_db()
    assert broadcast.status == BroadcastStatus.EXPANDED


def test_broadcast_seqs_continue_each_recipients_sequence(broadcaster, mobile_user, stranger, redis):
    from apps.messaging import services

    services.message_send(sender=broadcaster, recipient_phone_number=mobile_user.phone_number, content="1")
    broadcast = services.broadcast_create(
        sender=broadcaster, recipient_ids=[mobile_user.pk, stranger.pk], content="b"
    )

    expand_all(broadcast_id=broadcast.pk)

    seqs = dict(Message.objects.filter(broadcast=broadcast).values_list("recipient_id", "seq"))
    assert seqs == {mobile_user.pk: 2, stranger.pk: 1}


def test_sweep_restarts_a_stalled_expansion_from_its_cursor(broadcaster, redis):
    users = _users(3)
    broadcast = services.broadcast_create(
        sender=broadcaster, recipient_ids=[u.pk for u in users], content="x"
    )
    Broadcast.objects.filter(pk=broadcast.pk).update(
        updated_at=broadcast.created_at - services.BROADCAST_STALL, expanded_through=users[0].pk
    )

    assert services.sweep_broadcasts() == 1

    assert [args for name, args in queued_tasks(redis, "default") if name == EXPAND_TASK] == [
        [str(broadcast.pk), users[0].pk]
    ]


# --- API ---------------------------------------------------------------------------------------


def test_broadcast_api_accepts_a_list_and_shows_progress_to_its_sender(
    broadcaster_client, broadcaster, redis
):
    users = _users(3)
    phones = [u.phone_number for u in users] + [users[0].phone_number]  # duplicates count once

    response = broadcaster_client.post(
        URL, {"recipient_phone_numbers": phones, "content": "hi"}, format="json"
    )

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["total"] == 3
    assert Message.objects.count() == 0  # expanded by tasks, not by the request
    expand_all(broadcast_id=body["id"])
    Message.objects.filter(recipient=users[0]).update(status=Status.DELIVERED)

    progress = broadcaster_client.get(f"{URL}{body['id']}/").json()

    assert progress["status"] == "expanded"
    assert (
        progress["total"],
        progress["expanded"],
        progress["queued"],
        progress["delivered"],
        progress["failed"],
    ) == (
        3,
        3,
        2,
        1,
        0,
    )


def test_broadcast_to_all_counts_the_active_users(broadcaster_client, redis):
    users = _users(4)
    MobileUser.objects.filter(pk=users[0].pk).update(is_active=False)

    response = broadcaster_client.post(URL, {"all": True, "content": "hi"}, format="json")

    assert response.status_code == 202
    assert response.json()["total"] == 3


def test_broadcast_progress_is_hidden_from_other_senders(broadcaster, broadcaster_client, redis):
    other = SenderFactory(permissions=["send_broadcast"])
    from tests.conftest import client_for

    broadcast = services.broadcast_create(sender=broadcaster, recipient_ids=[], content="x")

    assert client_for(other).get(f"{URL}{broadcast.pk}/").status_code == 404
    assert broadcaster_client.get(f"{URL}not-a-uuid/").status_code == 404
    assert broadcaster_client.get(f"{URL}{broadcast.pk}/").status_code == 200


def test_broadcast_needs_the_broadcast_permission(sender_client, mobile_user):
    response = sender_client.post(
        URL, {"recipient_phone_numbers": [mobile_user.phone_number], "content": "x"}, format="json"
    )

    assert response.status_code == 403
    assert Broadcast.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"content": "x"},
        {"all": True, "recipient_phone_numbers": ["+14155550100"], "content": "x"},
        {"recipient_phone_numbers": [UNKNOWN_PHONE], "content": "x"},
        {"recipient_phone_numbers": ["not a phone"], "content": "x"},
        {"all": True, "content": ""},
        {"all": True, "content": "{", "content_type": "json"},
        {"all": True, "content": "x", "attachment_ids": ["6f1c1f0e-8a8e-4c43-9a55-2f1b1a3e6b10"]},
    ],
    ids=["no-audience", "both-audiences", "unknown-phone", "bad-phone", "empty", "bad-json", "attachment"],
)
def test_invalid_broadcast_is_refused_and_stores_nothing(broadcaster_client, body, redis):
    MobileUserFactory(phone_number="+14155550100")

    response = broadcaster_client.post(URL, body, format="json")

    assert response.status_code == 400, response.json()
    assert Broadcast.objects.count() == 0
