"""The transition table of `lifecycle.transition`: who moves, what is stamped, what is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.forms.models import model_to_dict
from django.utils import timezone

from apps.messaging import lifecycle
from apps.messaging.models import Channel, DeliveryAttempt, Message, Outcome, Status
from tests.factories import MessageFactory

Q, P, S, D, R, F = (Status.QUEUED, Status.PENDING, Status.SENT, Status.DELIVERED, Status.READ, Status.FAILED)
SC, C = Status.SCHEDULED, Status.CANCELED

# Written out independently of lifecycle.ALLOWED_SOURCES, as source -> reachable targets, so
# that an accidental edit of the table shows up here.
EXPECTED_TARGETS: dict[str, set[str]] = {
    SC: {Q, C},
    Q: {P, S, D, R, F, C},
    P: {S, D, R, F, C},
    S: {P, S, D, R, F},
    D: {R},
    R: set(),
    F: {Q},
    C: set(),
}
ALL_PAIRS = [(source, target) for source in Status.values for target in Status.values]
ALLOWED_PAIRS = [(s, t) for s, t in ALL_PAIRS if t in EXPECTED_TARGETS[s]]
REFUSED_PAIRS = [(s, t) for s, t in ALL_PAIRS if t not in EXPECTED_TARGETS[s]]


def _snapshot(message_id) -> dict:
    message = Message.objects.get(pk=message_id)
    return {**model_to_dict(message), "created_at": message.created_at}


@pytest.fixture(autouse=True, params=["one_statement", "lock_then_update"])
def implementation(request, monkeypatch):
    """Run every test with both ways of moving: PostgreSQL's one statement, and the other databases'."""
    if request.param == "lock_then_update":
        monkeypatch.setattr(
            lifecycle,
            "_move_in_one_statement",
            lambda *args: lifecycle._move_locked_then_update(*args)[0],
        )
    return request.param


@pytest.fixture
def earlier():
    return timezone.now() - timedelta(hours=1)


def _message_in(status: str, earlier, sender, mobile_user) -> Message:
    """Build a message in `status` with the timestamps that status would carry."""
    stamps: dict = {}
    if status in (S, D, R):
        stamps["sent_at"] = earlier
    if status in (D, R):
        stamps["delivered_at"] = earlier
    if status == R:
        stamps["read_at"] = earlier
    if status == F:
        stamps.update(failed_at=earlier, failure_reason="no ack", retry_count=6)
    return MessageFactory(sender=sender, recipient=mobile_user, status=status, **stamps)


def test_expected_table_matches_can_transition():
    for source, target in ALL_PAIRS:
        assert lifecycle.can_transition(source, target) == (target in EXPECTED_TARGETS[source]), (
            source,
            target,
        )


@pytest.mark.parametrize(("source", "target"), REFUSED_PAIRS)
def test_refused_transition_changes_nothing(source, target, earlier, sender, mobile_user):
    message = _message_in(source, earlier, sender, mobile_user)
    before = _snapshot(message.pk)

    moved = lifecycle.transition_one(message.pk, to=target, reason="should not stick")

    assert moved is False
    assert _snapshot(message.pk) == before


@pytest.mark.parametrize(("source", "target"), ALLOWED_PAIRS)
def test_allowed_transition_moves_and_stamps(source, target, earlier, sender, mobile_user):
    message = _message_in(source, earlier, sender, mobile_user)
    if source == SC and target == Q:  # a due scheduled message takes its seq first (schedule.py)
        Message.objects.filter(pk=message.pk).update(seq=1)
    before = _snapshot(message.pk)
    now = timezone.now()

    moved = lifecycle.transition(Message.objects.filter(pk=message.pk), to=target, now=now, reason="why")

    assert [(m.id, m.previous) for m in moved] == [(message.pk, source)]
    after = _snapshot(message.pk)
    assert after["status"] == target
    expected = {**before, "status": target}
    if target == S:
        expected["sent_at"] = now
    elif target == D:
        expected.update(delivered_at=now, next_attempt_at=None)
    elif target == R:
        # Read implies delivered; an earlier delivered_at is kept.
        expected.update(read_at=now, delivered_at=before["delivered_at"] or now, next_attempt_at=None)
    elif target == F:
        expected.update(failed_at=now, failure_reason="why", next_attempt_at=None)
    elif target == Q:
        expected.update(failed_at=None, failure_reason="", retry_count=0)
    elif target == C:
        expected.update(canceled_at=now, failure_reason="why", next_attempt_at=None)
    assert after == expected


def test_read_without_ack_stamps_delivered_at_too(sender, mobile_user):
    message = MessageFactory(sender=sender, recipient=mobile_user, status=S)
    now = timezone.now()

    lifecycle.transition_one(message.pk, to=R, now=now)

    message.refresh_from_db()
    assert (message.status, message.read_at, message.delivered_at) == (R, now, now)


def test_read_after_ack_keeps_the_earlier_delivered_at(sender, mobile_user, earlier):
    message = MessageFactory(sender=sender, recipient=mobile_user, status=S)
    lifecycle.transition_one(message.pk, to=D, now=earlier)

    lifecycle.transition_one(message.pk, to=R)

    message.refresh_from_db()
    assert message.status == R
    assert message.delivered_at == earlier
    assert message.read_at > earlier


def test_bulk_transition_moves_only_allowed_sources(sender, mobile_user, earlier):
    by_status = {status: _message_in(status, earlier, sender, mobile_user) for status in Status.values}

    moved = lifecycle.transition(Message.objects.filter(recipient=mobile_user), to=D)

    assert {m.id: m.previous for m in moved} == {by_status[s].pk: s for s in (Q, P, S)}
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses == {
        by_status[Q].pk: D,
        by_status[P].pk: D,
        by_status[S].pk: D,
        by_status[D].pk: D,
        by_status[R].pk: R,
        by_status[F].pk: F,
        by_status[SC].pk: SC,
        by_status[C].pk: C,
    }
    # The delivered one kept its original ack time.
    assert Message.objects.get(pk=by_status[D].pk).delivered_at == earlier


def test_transition_applies_extra_changes_only_to_moved_rows(sender, mobile_user):
    due = timezone.now() + timedelta(seconds=30)
    sent = MessageFactory(sender=sender, recipient=mobile_user, status=S, next_attempt_at=None)
    read = MessageFactory(sender=sender, recipient=mobile_user, status=R, next_attempt_at=None)

    lifecycle.transition(Message.objects.filter(recipient=mobile_user), to=S, next_attempt_at=due)

    assert Message.objects.get(pk=sent.pk).next_attempt_at == due
    assert Message.objects.get(pk=read.pk).next_attempt_at is None


def test_transition_closes_the_open_attempts_of_the_moved_messages_only(sender, mobile_user):
    now = timezone.now()
    moving = MessageFactory(sender=sender, recipient=mobile_user, status=S)
    staying = MessageFactory(sender=sender, recipient=mobile_user, status=R)

    def attempt(message, outcome, channel=Channel.WEBSOCKET):
        return DeliveryAttempt.objects.create(message=message, at=now, channel=channel, outcome=outcome)

    open_moving, open_staying = attempt(moving, Outcome.SENT), attempt(staying, Outcome.SENT)
    settled, pushed = attempt(moving, Outcome.TIMEOUT), attempt(moving, Outcome.SENT, Channel.FCM)

    moved = lifecycle.transition(
        Message.objects.filter(recipient=mobile_user),
        to=F,
        reason="why",
        close_attempts=lifecycle.CloseAttempts(Outcome.ERROR, "broken pipe"),
    )

    assert [m.id for m in moved] == [moving.pk]
    outcomes = {a.pk: (a.outcome, a.error) for a in DeliveryAttempt.objects.all()}
    assert outcomes == {
        open_moving.pk: (Outcome.ERROR, "broken pipe"),
        open_staying.pk: (Outcome.SENT, ""),  # its message did not move
        settled.pk: (Outcome.TIMEOUT, ""),
        pushed.pk: (Outcome.SENT, ""),  # not a WebSocket attempt
    }


def test_unknown_target_is_rejected(sender, mobile_user):
    message = MessageFactory(sender=sender, recipient=mobile_user)

    with pytest.raises(lifecycle.InvalidTransition):
        lifecycle.transition_one(message.pk, to="archived")

    assert Message.objects.get(pk=message.pk).status == Q


def test_status_cannot_be_smuggled_in_changes(sender, mobile_user):
    message = MessageFactory(sender=sender, recipient=mobile_user)

    with pytest.raises(lifecycle.InvalidTransition):
        lifecycle.transition(Message.objects.filter(pk=message.pk), to=P, status=R)

    assert Message.objects.get(pk=message.pk).status == Q


def test_transition_of_empty_queryset_moves_nothing(db):
    assert lifecycle.transition(Message.objects.none(), to=D) == []


@pytest.mark.parametrize("target", [D, R, F])
def test_terminal_or_advanced_target_is_not_left_by_a_late_worker(target, sender, mobile_user):
    """A late `sent` or `pending` (worker bookkeeping, timeout) never undoes an ack, read or failure."""
    message = MessageFactory(sender=sender, recipient=mobile_user, status=S)
    lifecycle.transition_one(message.pk, to=target)

    assert lifecycle.transition_one(message.pk, to=S) is False
    assert lifecycle.transition_one(message.pk, to=P) is False
    assert Message.objects.get(pk=message.pk).status == target


def test_every_transition_is_logged_once_with_its_source_target_and_reason(sender, mobile_user, caplog):
    queued = MessageFactory(sender=sender, recipient=mobile_user, status=Status.QUEUED)
    read = MessageFactory(sender=sender, recipient=mobile_user, status=Status.READ)

    with caplog.at_level("INFO", logger="apps.messaging.lifecycle"):
        lifecycle.transition(
            Message.objects.filter(pk__in=[queued.pk, read.pk]), to=Status.FAILED, reason="expired"
        )

    records = [r for r in caplog.records if r.getMessage() == "message.status"]
    assert [(r.message_id, r.__dict__["from"], r.to, r.reason) for r in records] == [
        (str(queued.pk), Status.QUEUED, Status.FAILED, "expired")
    ]  # the refused move of the read message logs nothing


def test_a_status_line_carries_the_correlation_id_of_the_request_that_sent_the_message(
    sender, mobile_user, caplog
):
    from apps.common.logging import CorrelationIdFilter, correlation_context

    sent_by_request = MessageFactory(sender=sender, recipient=mobile_user, correlation_id="req-1")
    without_one = MessageFactory(sender=sender, recipient=mobile_user, correlation_id="")

    with caplog.at_level("INFO", logger="apps.messaging.lifecycle"), correlation_context("sweep-9"):
        lifecycle.transition(
            Message.objects.filter(pk__in=[sent_by_request.pk, without_one.pk]), to=Status.PENDING
        )

    stamp = CorrelationIdFilter()
    records = {r.message_id: r for r in caplog.records if r.getMessage() == "message.status"}
    with correlation_context("sweep-9"):
        for record in records.values():
            stamp.filter(record)
    assert records[str(sent_by_request.pk)].correlation_id == "req-1"
    assert records[str(without_one.pk)].correlation_id == "sweep-9"  # falls back to the task's
