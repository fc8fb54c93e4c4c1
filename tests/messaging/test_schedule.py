"""Scheduled send and cancel (SPEC.md section 8): stored `scheduled`, promoted when due, withdrawn.

Against the real database, Redis and broker queues: a scheduled message takes its seq only when
it becomes due (so seqs stay gapless and in promotion order), the relay's promotion claims rows
once however many relays run, and a canceled message is never written to a socket while its
seq, if it had one, is explained by a `skip` frame.
"""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.accounts.party import Party
from apps.devices.services import device_register, push_send, push_window_close
from apps.messaging import relay, services
from apps.messaging.errors import MessageNotCancelable
from apps.messaging.models import Broadcast, Message, Priority, Status
from apps.messaging.services import schedule
from tests.concurrency import run_together
from tests.conftest import client_for
from tests.factories import MessageFactory, MobileUserFactory, SenderFactory
from tests.messaging.test_send import dispatched_ids

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def relay_only(settings):
    """No relay round after commit: the test decides when the relay looks."""
    settings.MESSAGING_RELAY_ON_COMMIT = False


def _later(seconds: float = 60) -> str:
    return (timezone.now() + timedelta(seconds=seconds)).isoformat()


def _send(sender, recipient, **kwargs) -> Message:
    return services.message_send(
        sender=sender, recipient_phone_number=recipient.phone_number, content="hi", **kwargs
    )


def _row(message_id) -> Message:
    return Message.objects.get(pk=message_id)


# --- the API ---------------------------------------------------------------------------------


def test_a_send_with_send_at_is_accepted_scheduled_without_a_seq(sender_client, mobile_user, redis):
    send_at = timezone.now() + timedelta(minutes=5)

    response = sender_client.post(
        "/api/v1/messages/",
        {
            "recipient_phone_number": mobile_user.phone_number,
            "content": "later",
            "ttl_seconds": 60,
            "send_at": send_at.isoformat(),
        },
        format="json",
    )

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["status"], body["seq"]) == ("scheduled", None)
    stored = _row(body["id"])
    assert (stored.status, stored.seq, stored.send_at) == (Status.SCHEDULED, None, send_at)
    # TTL counts from send_at, not from acceptance.
    assert stored.expires_at == send_at + timedelta(seconds=60)
    mobile_user.refresh_from_db()
    assert mobile_user.last_seq == 0  # no seq taken yet
    assert relay.relay_round() == 0  # nothing to dispatch before it is due
    assert dispatched_ids(redis) == []


@pytest.mark.parametrize(
    ("send_at", "expected"),
    [
        ("2020-01-01T00:00:00+00:00", "in the future"),
        ("2999-01-01T00:00:00+00:00", "30 days"),
        ("2026-13-45T99:00:00+00:00", "ISO 8601"),
        ("tomorrow", "ISO 8601"),
        (12345, "ISO 8601"),
        ("naive", "UTC offset"),
    ],
)
def test_a_bad_send_at_is_400_naming_it_and_stores_nothing(sender_client, mobile_user, send_at, expected):
    if send_at == "naive":
        send_at = (timezone.now() + timedelta(hours=1)).replace(tzinfo=None).isoformat()

    response = sender_client.post(
        "/api/v1/messages/",
        {"recipient_phone_number": mobile_user.phone_number, "content": "x", "send_at": send_at},
        format="json",
    )

    assert response.status_code == 400
    assert expected in str(response.json()["send_at"])
    assert not Message.objects.exists()


def test_a_batch_mixes_scheduled_and_immediate_items_with_gapless_seqs(sender_client, mobile_user):
    items = [
        {"recipient_phone_number": mobile_user.phone_number, "content": "now 1"},
        {"recipient_phone_number": mobile_user.phone_number, "content": "later", "send_at": _later()},
        {"recipient_phone_number": mobile_user.phone_number, "content": "now 2"},
    ]

    response = sender_client.post("/api/v1/messages/batch/", {"messages": items}, format="json")

    assert response.status_code == 202, response.content
    ids = response.json()["ids"]
    assert [(_row(pk).status, _row(pk).seq) for pk in ids] == [
        (Status.QUEUED, 1),
        (Status.SCHEDULED, None),
        (Status.QUEUED, 2),
    ]
    Message.objects.filter(pk=ids[1]).update(next_attempt_at=timezone.now())
    assert schedule.scheduled_promote_due() == 1
    assert (_row(ids[1]).status, _row(ids[1]).seq) == (Status.QUEUED, 3)


def test_a_batch_item_with_a_bad_send_at_is_named_by_index(sender_client, mobile_user):
    items = [
        {"recipient_phone_number": mobile_user.phone_number, "content": "fine"},
        {
            "recipient_phone_number": mobile_user.phone_number,
            "content": "bad",
            "send_at": "2001-01-01T00:00Z",
        },
    ]

    response = sender_client.post("/api/v1/messages/batch/", {"messages": items}, format="json")

    assert response.status_code == 400
    assert "send_at" in response.json()["messages"]["1"]
    assert not Message.objects.exists()


def test_a_scheduled_broadcast_expands_into_scheduled_messages(sender, mobile_user, stranger):
    send_at = timezone.now() + timedelta(minutes=1)
    broadcast = services.broadcast_create(
        sender=sender, recipient_ids=[mobile_user.pk, stranger.pk], content="all", send_at=send_at
    )

    assert services.broadcast_expand_chunk(broadcast_id=broadcast.pk, after=0) is None

    rows = list(Message.objects.filter(broadcast=broadcast).values_list("status", "seq", "send_at"))
    assert rows == [(Status.SCHEDULED, None, send_at)] * 2
    assert Broadcast.objects.get(pk=broadcast.pk).send_at == send_at


def test_batch_and_broadcast_items_count_their_ttl_from_send_at(sender, sender_client, mobile_user, stranger):
    send_at = timezone.now() + timedelta(minutes=10)
    item = {
        "recipient_phone_number": mobile_user.phone_number,
        "content": "later",
        "ttl_seconds": 60,
        "send_at": send_at.isoformat(),
    }
    batch = sender_client.post("/api/v1/messages/batch/", {"messages": [item]}, format="json")
    assert batch.status_code == 202, batch.content
    broadcast = services.broadcast_create(
        sender=sender, recipient_ids=[stranger.pk], content="all", ttl_seconds=60, send_at=send_at
    )
    services.broadcast_expand_chunk(broadcast_id=broadcast.pk, after=0)

    [from_batch] = batch.json()["ids"]
    from_broadcast = Message.objects.get(broadcast=broadcast)
    for message in (_row(from_batch), from_broadcast):
        assert (message.status, message.seq, message.next_attempt_at) == (Status.SCHEDULED, None, send_at)
        assert message.expires_at == send_at + timedelta(seconds=60)


@pytest.mark.parametrize(
    ("send_at", "expected"),
    [
        ("2020-01-01T00:00:00+00:00", "in the future"),
        ("2999-01-01T00:00:00+00:00", "30 days"),
        ("next tuesday", "ISO 8601"),
    ],
)
def test_a_broadcast_with_a_bad_send_at_is_400_and_stores_nothing(mobile_user, send_at, expected):
    broadcaster = client_for(SenderFactory(permissions=["send_broadcast"]))
    response = broadcaster.post(
        "/api/v1/messages/broadcast/",
        {"recipient_phone_numbers": [mobile_user.phone_number], "content": "x", "send_at": send_at},
        format="json",
    )

    assert response.status_code == 400, response.content
    assert expected in str(response.json()["send_at"])
    assert not Broadcast.objects.exists()
    assert not Message.objects.exists()


def test_send_at_is_judged_on_the_shared_clock_not_the_web_hosts(sender_client, mobile_user, host_clock_off):
    # The promotion compares send_at with the shared clock: a web host 5 minutes ahead must not
    # call a time 2 minutes ahead "past", nor one 30 days less 2 minutes "too far" when behind.
    host_clock_off(300)
    soon = timezone.now() - timedelta(minutes=3)  # true time + 2 minutes
    response = sender_client.post(
        "/api/v1/messages/",
        {"recipient_phone_number": mobile_user.phone_number, "content": "x", "send_at": soon.isoformat()},
        format="json",
    )
    assert response.status_code == 202, response.content
    assert _row(response.json()["id"]).status == Status.SCHEDULED


def test_a_worker_whose_host_clock_is_ahead_expands_a_broadcast_due_at_once(
    sender, mobile_user, stranger, host_clock_off, redis
):
    # Workers claim queued messages due on the shared clock: stamped 5 minutes ahead by a
    # skewed worker, a broadcast would wait 5 minutes, and its TTL would run from then.
    broadcast = services.broadcast_create(
        sender=sender, recipient_ids=[mobile_user.pk, stranger.pk], content="all", ttl_seconds=600
    )
    host_clock_off(300)
    services.broadcast_expand_chunk(broadcast_id=broadcast.pk, after=0)
    host_clock_off(0)

    assert relay.relay_round() == 1  # the lane's task: both messages are due now
    assert sorted(dispatched_ids(redis)) == sorted(
        str(pk) for pk in Message.objects.filter(broadcast=broadcast).values_list("pk", flat=True)
    )
    for expires_at in Message.objects.filter(broadcast=broadcast).values_list("expires_at", flat=True):
        assert abs((expires_at - timezone.now()).total_seconds() - 600) < 60


# --- promotion -------------------------------------------------------------------------------


def test_promotion_waits_for_send_at_then_queues_with_the_next_seqs_and_dispatches(
    sender, mobile_user, redis
):
    now = timezone.now()
    first = _send(sender, mobile_user)  # seq 1
    later = _send(sender, mobile_user, send_at=now + timedelta(seconds=30))
    sooner = _send(sender, mobile_user, send_at=now + timedelta(seconds=10))
    relay.relay_round()
    assert dispatched_ids(redis) == [str(first.pk)]

    assert schedule.scheduled_promote_due(now=now + timedelta(seconds=5)) == 0
    assert _row(sooner.pk).status == Status.SCHEDULED

    assert schedule.scheduled_promote_due(now=now + timedelta(seconds=10)) == 1
    assert (_row(sooner.pk).status, _row(sooner.pk).seq) == (Status.QUEUED, 2)
    assert schedule.scheduled_next_due_at() == now + timedelta(seconds=30)

    assert schedule.scheduled_promote_due(now=now + timedelta(seconds=31)) == 1
    assert schedule.scheduled_promote_due(now=now + timedelta(seconds=31)) == 0  # idempotent
    assert (_row(later.pk).status, _row(later.pk).seq) == (Status.QUEUED, 3)
    assert schedule.scheduled_next_due_at() is None
    # Due for the relay from the moment of promotion (the relay thread test sees them leave).
    assert _row(later.pk).next_attempt_at == now + timedelta(seconds=31)


def test_two_promotions_at_once_give_each_message_one_seq(sender, redis):
    users = MobileUserFactory.create_batch(3)
    due = timezone.now() + timedelta(milliseconds=200)
    for user in users:
        for _ in range(20):
            _send(sender, user, send_at=due)
    time.sleep(0.25)

    counts = run_together(schedule.scheduled_promote_due, schedule.scheduled_promote_due)

    assert sum(counts) == 60
    for user in users:
        seqs = sorted(Message.objects.filter(recipient=user).values_list("seq", flat=True))
        assert seqs == list(range(1, 21))
        user.refresh_from_db()
        assert user.last_seq == 20
    assert set(Message.objects.values_list("status", flat=True)) == {Status.QUEUED}


def test_the_relay_thread_promotes_a_scheduled_message_within_a_second_of_send_at(
    sender, mobile_user, redis, settings
):
    settings.MESSAGING_RELAY_POLL_SECONDS = 30  # the wake-up and the due time do it, not the poll
    running = relay.Relay().start()
    try:
        time.sleep(0.2)  # listening
        send_at = timezone.now() + timedelta(seconds=1.5)
        message = _send(sender, mobile_user, send_at=send_at)
        deadline = time.monotonic() + 5
        while _row(message.pk).status == Status.SCHEDULED and time.monotonic() < deadline:
            time.sleep(0.01)
        promoted_at = timezone.now()
        while not dispatched_ids(redis) and time.monotonic() < deadline:
            time.sleep(0.01)  # the round after the promotion publishes it
    finally:
        running.stop()

    assert _row(message.pk).status == Status.QUEUED
    assert send_at <= promoted_at < send_at + timedelta(seconds=1)
    assert dispatched_ids(redis) == [str(message.pk)]


# --- cancel ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [Status.SCHEDULED, Status.QUEUED, Status.PENDING])
def test_cancel_of_a_message_no_device_has_is_200_canceled(sender, sender_client, mobile_user, status):
    message = MessageFactory(sender=sender, recipient=mobile_user, status=status)

    response = sender_client.post(f"/api/v1/messages/{message.pk}/cancel/")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "canceled"
    stored = _row(message.pk)
    assert (stored.status, stored.next_attempt_at) == (Status.CANCELED, None)
    assert stored.seq == message.seq  # a seq it had stays taken


@pytest.mark.parametrize(
    "status", [Status.SENT, Status.DELIVERED, Status.READ, Status.FAILED, Status.CANCELED]
)
def test_cancel_of_a_message_a_device_may_have_is_409_naming_its_status(
    sender, sender_client, mobile_user, status
):
    message = MessageFactory(sender=sender, recipient=mobile_user, status=status)

    response = sender_client.post(f"/api/v1/messages/{message.pk}/cancel/")

    assert response.status_code == 409
    assert status in response.json()["detail"]
    assert _row(message.pk).status == status


def test_cancel_of_another_senders_message_is_404_and_changes_nothing(
    sender, other_sender_client, mobile_client, mobile_user
):
    message = MessageFactory(sender=sender, recipient=mobile_user, status=Status.QUEUED)

    assert other_sender_client.post(f"/api/v1/messages/{message.pk}/cancel/").status_code == 404
    assert other_sender_client.post("/api/v1/messages/not-a-uuid/cancel/").status_code == 404
    assert mobile_client.post(f"/api/v1/messages/{message.pk}/cancel/").status_code == 403
    assert _row(message.pk).status == Status.QUEUED


def test_a_canceled_message_is_never_written_to_a_socket(sender, mobile_user, redis):
    message = _send(sender, mobile_user)
    schedule.message_cancel(sender=sender, message_id=message.pk)

    # Whatever still holds its id (a chunk task, a retry, a catch-up) finds it canceled.
    report = services.messages_deliver_chunk(message_ids=[str(message.pk)])
    assert report.sent == 0
    assert services.message_deliver(message_id=message.pk) == "skipped"
    assert services.messages_mark_sent([message.pk]) == set()
    assert _row(message.pk).sent_at is None


def test_a_canceled_pending_message_drops_its_push(sender, mobile_user, redis):
    device_register(mobile_user=mobile_user, token="android-tok", platform="android")
    waiting = MessageFactory(sender=sender, recipient=mobile_user, status=Status.PENDING)
    canceled = MessageFactory(sender=sender, recipient=mobile_user, status=Status.PENDING)  # newest
    schedule.message_cancel(sender=sender, message_id=canceled.pk)

    # The window's push carries the newest message still waiting, never the canceled one, and a
    # retry of a push already made for the canceled one sends nothing.
    assert push_window_close(recipient_id=mobile_user.pk) == "sent"
    assert list(waiting.attempts.values_list("channel", "outcome")) == [("fcm", "sent")]
    assert push_send(message_id=canceled.pk).results == []
    assert not canceled.attempts.exists()

    schedule.message_cancel(sender=sender, message_id=waiting.pk)
    assert push_window_close(recipient_id=mobile_user.pk) == "nothing"
    assert waiting.attempts.count() == 1


def test_cancel_racing_the_worker_that_sends_it_has_one_winner(sender, mobile_user, redis):
    for _ in range(10):
        message = _send(sender, mobile_user)

        def cancel(pk=message.pk):
            try:
                schedule.message_cancel(sender=sender, message_id=pk)
                return "canceled"
            except MessageNotCancelable:
                return "refused"

        canceled, sent = run_together(cancel, lambda pk=message.pk: services.messages_mark_sent([pk]))

        final = _row(message.pk)
        if canceled == "canceled":
            assert (final.status, sent, final.sent_at) == (Status.CANCELED, set(), None)
        else:
            assert final.status == Status.SENT and sent == {message.pk}


def test_catch_up_explains_a_canceled_seq_with_a_skip_frame_in_seq_order(sender, mobile_user, redis):
    delivered = MessageFactory(sender=sender, recipient=mobile_user, status=Status.DELIVERED)  # seq 1
    canceled = _send(sender, mobile_user)  # seq 2
    waiting = _send(sender, mobile_user)  # seq 3
    canceled_last = _send(sender, mobile_user)  # seq 4
    for message in (canceled, canceled_last):
        schedule.message_cancel(sender=sender, message_id=message.pk)
    assert delivered.seq == 1

    frames, last = services.catchup_chunk(recipient=Party.mobile(mobile_user.pk), after_seq=0, limit=10)

    assert [f.frame for f in frames] == [
        '{"type":"skip","seq":2}',
        frames[1].frame,
        '{"type":"skip","seq":4}',
    ]
    assert frames[1].pk == waiting.pk and '"seq":3' in frames[1].frame
    assert last is None  # a short chunk is the last one


def test_a_skip_below_the_newest_delivered_message_is_not_sent_again(sender, mobile_user, redis):
    canceled = _send(sender, mobile_user)  # seq 1, canceled while the client was connected
    schedule.message_cancel(sender=sender, message_id=canceled.pk)
    MessageFactory(sender=sender, recipient=mobile_user, status=Status.DELIVERED)  # seq 2: seen

    frames, _ = services.catchup_chunk(recipient=Party.mobile(mobile_user.pk), after_seq=0, limit=10)

    assert frames == []


def test_chunked_catch_up_sends_each_skip_once(sender, mobile_user, redis):
    messages = [_send(sender, mobile_user) for _ in range(6)]  # seqs 1..6
    for message in messages[1::2]:  # seqs 2, 4, 6
        schedule.message_cancel(sender=sender, message_id=message.pk)

    seen, after = [], 0
    while True:
        frames, after = services.catchup_chunk(
            recipient=Party.mobile(mobile_user.pk), after_seq=after, limit=2
        )
        seen += [f.frame for f in frames]
        if after is None:
            break

    skips = [frame for frame in seen if '"skip"' in frame]
    assert skips == ['{"type":"skip","seq":2}', '{"type":"skip","seq":4}', '{"type":"skip","seq":6}']
    assert len(seen) == 6


# --- property: cancel in any interleaving ----------------------------------------------------

SC, Q, P, S, D, F, C = (
    Status.SCHEDULED,
    Status.QUEUED,
    Status.PENDING,
    Status.SENT,
    Status.DELIVERED,
    Status.FAILED,
    Status.CANCELED,
)
PER_MESSAGE = ["send", "ack", "cancel"]
EVERY_MESSAGE = ["promote", "chunk", "claim", "ack_timeout_sweep", "release_unacked", "relay"]
cancel_operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(PER_MESSAGE), st.integers(min_value=0, max_value=2)),
        st.tuples(st.sampled_from(EVERY_MESSAGE), st.none()),
    ),
    max_size=25,
)


def _model_step(
    statuses: list[str], retries: list[int], op: str, index: int | None, max_retries: int
) -> None:
    """The transition table for these steps, written out by hand."""
    for i, status in enumerate(statuses):
        if index is not None and i != index:
            continue
        if op == "promote" and status == SC:
            statuses[i] = Q
        elif op in ("chunk", "claim") and status == Q:  # the recipient is offline
            statuses[i] = P
        elif op == "send" and status in (Q, P, S):
            statuses[i] = S
        elif op == "ack" and status in (Q, P, S):
            statuses[i] = D
        elif op == "cancel" and status in (SC, Q, P):
            statuses[i] = C
        elif op == "release_unacked" and status == S:
            statuses[i] = P
        elif op == "ack_timeout_sweep" and status == S:
            if retries[i] >= max_retries:
                statuses[i] = F
            else:
                statuses[i], retries[i] = P, retries[i] + 1


def _real_step(sender, recipient, messages: list[Message], op: str, index: int | None) -> None:
    ids = [m.pk for m in messages]
    if op == "promote":
        Message.objects.filter(pk__in=ids, status=SC).update(next_attempt_at=timezone.now())
        schedule.scheduled_promote_due()
    elif op == "chunk":
        services.messages_deliver_chunk(message_ids=[str(pk) for pk in ids])
    elif op == "ack_timeout_sweep":
        services.sweep_ack_timeouts()
    elif op == "release_unacked":
        services.messages_release_unacked(recipients=[Party.mobile(recipient.pk)], reason="connection closed")
    elif op == "relay":
        relay.relay_round()
    elif op == "claim":  # a worker's deliver_due: the lane's due queued messages
        services.messages_deliver_due(priority=Priority.NORMAL)
    elif op == "send":
        services.messages_mark_sent([ids[index]])
    elif op == "ack":
        services.messages_acknowledge(recipient=Party.mobile(recipient.pk), message_ids=[str(ids[index])])
    elif op == "cancel":
        with contextlib.suppress(MessageNotCancelable):
            schedule.message_cancel(sender=sender, message_id=ids[index])


RANK = {SC: 0, Q: 1, P: 2, S: 2, D: 3}


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=cancel_operations)
def test_no_interleaving_delivers_a_canceled_message_or_moves_a_status_back(
    ops, sender, mobile_user, redis, settings
):
    settings.MESSAGING_ACK_TIMEOUT_SECONDS = 0
    settings.MESSAGING_MAX_RETRIES = 1
    Message.objects.all().delete()
    type(mobile_user).objects.filter(pk=mobile_user.pk).update(last_seq=0)
    messages = [
        _send(sender, mobile_user, send_at=timezone.now() + timedelta(hours=1)),
        _send(sender, mobile_user),
        _send(sender, mobile_user, send_at=timezone.now() + timedelta(hours=1)),
    ]
    statuses, retries = [m.status for m in messages], [0, 0, 0]
    sent_count = dict.fromkeys((m.pk for m in messages), 0)
    for op, index in ops:
        before = dict(Message.objects.filter(pk__in=sent_count).values_list("pk", "status"))
        _real_step(sender, mobile_user, messages, op, index)
        _model_step(statuses, retries, op, index, max_retries=1)
        rows = {row["id"]: row for row in Message.objects.filter(pk__in=sent_count).values()}
        for message, expected in zip(messages, statuses, strict=True):
            row, old = rows[message.pk], before[message.pk]
            assert row["status"] == expected, (op, index, old, row["status"])
            if old == C:  # canceled is final and nothing is written after it
                assert row["status"] == C and row["sent_at"] == rows[message.pk]["sent_at"]
            elif old not in (F,) and row["status"] not in (F, C):
                assert RANK[row["status"]] >= RANK[old] or (old == S and row["status"] == P)
            attempts = message.attempts.filter(outcome="sent").count()
            if row["status"] == C:
                assert attempts == sent_count[message.pk]  # no write after the cancel
            sent_count[message.pk] = attempts
    # Seqs stay gapless over the promoted and immediate messages; canceled scheduled ones hold none.
    seqs = sorted(s for s in Message.objects.values_list("seq", flat=True) if s is not None)
    assert seqs == list(range(1, len(seqs) + 1))
