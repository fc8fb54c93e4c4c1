"""Property: any interleaving of delivery steps, receipts and sweeps follows the lifecycle.

Random sequences of operations on a few messages of one (offline) recipient are run against
the real services and database and compared, after every step, with an in-memory model of the
transition table. Statuses never move backwards, receipts' timestamps are never cleared, and
a dead letter exists exactly for the failed messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.accounts.party import Party
from apps.messaging import relay, services
from apps.messaging.models import DeadLetter, Message, Priority, Status
from tests.factories import MessageFactory

Q, P, S, D, R, F = (Status.QUEUED, Status.PENDING, Status.SENT, Status.DELIVERED, Status.READ, Status.FAILED)
UNDELIVERED = {Q, P, S}
RANK = {Q: 0, P: 1, S: 1, D: 2, R: 3}
MESSAGES = 3
MAX_RETRIES = 2

PER_MESSAGE_OPS = ["send", "deliver", "ack", "read", "fail", "expire", "requeue"]
# Set-based steps over every message at once: a worker's claim of the due queued ones and a chunk
# delivered while the recipient is offline, one receipt frame acking or reading them all (plus a
# stranger's id).
GLOBAL_OPS = ["ack_timeout_sweep", "release_unacked", "relay", "claim", "chunk", "ack_all", "read_all"]
operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(PER_MESSAGE_OPS), st.integers(min_value=0, max_value=MESSAGES - 1)),
        st.tuples(st.sampled_from(GLOBAL_OPS), st.none()),
    ),
    max_size=30,
)


@dataclass
class Model:
    status: str = Q
    retry_count: int = 0
    expired: bool = False


def _apply_to_model(models: list[Model], op: str, index: int | None) -> None:
    """Apply one operation to the in-memory model: the transition table, written out by hand."""
    if op == "ack_timeout_sweep":
        for m in models:
            if m.status == S:
                if m.retry_count >= MAX_RETRIES:
                    m.status = F
                else:
                    m.status, m.retry_count = P, m.retry_count + 1
        return
    if op == "release_unacked":
        for m in models:
            if m.status == S:
                m.status = P
        return
    if op == "relay":
        return  # it only asks for a worker's claim: statuses are the delivery's
    if op in ("chunk", "claim"):
        for m in models:
            if m.status == Q:  # the recipient is offline
                m.status = P
        return
    if op in ("ack_all", "read_all"):
        for m in models:
            if m.status in UNDELIVERED or (op == "read_all" and m.status == D):
                m.status = D if op == "ack_all" else R
        return
    m = models[index]
    if op == "send" and m.status in UNDELIVERED:
        m.status = S
    elif op == "deliver" and m.status == Q:  # the recipient is offline
        m.status = P
    elif op == "ack" and m.status in UNDELIVERED:
        m.status = D
    elif op == "read" and m.status in UNDELIVERED | {D}:
        m.status = R
    elif op == "fail" and m.status in UNDELIVERED:
        m.status = F
    elif op == "expire":
        m.expired = True
        for other in models:
            if other.expired and other.status in UNDELIVERED:
                other.status = F
    elif op == "requeue" and m.status == F:
        m.status, m.retry_count, m.expired = Q, 0, False


def _apply(
    messages: list[Message], recipient_id: int, op: str, index: int | None, stranger_message_id=None
) -> None:
    """Run one operation through the real services."""
    if op == "ack_timeout_sweep":
        services.sweep_ack_timeouts()
        return
    if op == "release_unacked":
        services.messages_release_unacked(recipients=[Party.mobile(recipient_id)], reason="connection closed")
        return
    if op == "relay":
        relay.relay_round()
        return
    if op == "claim":  # a worker's deliver_due: the lane's due queued messages
        services.messages_deliver_due(priority=Priority.NORMAL)
        return
    if op == "chunk":
        services.messages_deliver_chunk(message_ids=[str(m.pk) for m in messages])
        return
    if op in ("ack_all", "read_all"):
        ids = [str(m.pk) for m in messages] + [str(stranger_message_id)]
        apply = services.messages_acknowledge if op == "ack_all" else services.messages_mark_read
        apply(recipient=Party.mobile(recipient_id), message_ids=ids)
        return
    pk = messages[index].pk
    if op == "send":
        services.messages_mark_sent([pk])
    elif op == "deliver":
        services.message_deliver(message_id=pk)
    elif op == "ack":
        services.messages_acknowledge(recipient=Party.mobile(recipient_id), message_ids=[str(pk)])
    elif op == "read":
        services.messages_mark_read(recipient=Party.mobile(recipient_id), message_ids=[str(pk)])
    elif op == "fail":
        services.messages_fail(Message.objects.filter(pk=pk), reason="permanent error")
    elif op == "expire":
        Message.objects.filter(pk=pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        services.sweep_expired()
    elif op == "requeue":
        services.dead_letters_requeue(dead_letters=DeadLetter.objects.filter(message_id=pk))


def _moved_forward(old: str, new: str, op: str) -> bool:
    if old == new:
        return True
    if old == F:
        return new == Q and op == "requeue"
    if old == R:
        return False
    return new == F or RANK[new] >= RANK[old]


@hypothesis_settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_interleavings_follow_the_transition_table(ops, sender, mobile_user, stranger, redis, settings):
    # An ack timeout of 0 makes every `sent` message due for the sweep at once; two retries
    # make exhaustion reachable in short sequences.
    settings.MESSAGING_ACK_TIMEOUT_SECONDS = 0
    settings.MESSAGING_MAX_RETRIES = MAX_RETRIES
    with transaction.atomic():
        messages = [MessageFactory(sender=sender, recipient=mobile_user) for _ in range(MESSAGES)]
        # Another recipient's message: receipts naming it must leave it alone.
        foreign = MessageFactory(sender=sender, recipient=stranger, priority=Priority.LOW)  # not claimed
        models = [Model() for _ in messages]
        first_seen: dict[tuple[int, str], object] = {}
        previous = [Q] * MESSAGES

        for op, index in ops:
            _apply(messages, mobile_user.pk, op, index, foreign.pk)
            _apply_to_model(models, op, index)

            rows = {row["id"]: row for row in Message.objects.values()}
            assert rows[foreign.pk]["status"] == Q
            dead = set(DeadLetter.objects.values_list("message_id", flat=True))
            assert DeadLetter.objects.count() == len(dead)
            for i, (message, model) in enumerate(zip(messages, models, strict=True)):
                row = rows[message.pk]
                step = (op, index, i)
                assert row["status"] == model.status, step
                assert row["retry_count"] == model.retry_count, step
                assert _moved_forward(previous[i], row["status"], op), (previous[i], row["status"], step)
                previous[i] = row["status"]

                # Receipts' timestamps are set with their status and never change afterwards.
                for field in ("delivered_at", "read_at"):
                    if row[field] is not None:
                        assert first_seen.setdefault((i, field), row[field]) == row[field], step
                    else:
                        assert (i, field) not in first_seen, step
                assert (row["delivered_at"] is not None) == (row["status"] in (D, R)), step
                assert (row["read_at"] is not None) == (row["status"] == R), step
                assert row["read_at"] is None or row["delivered_at"] <= row["read_at"]

                # A failed message has its reason and exactly one dead letter; nothing else does.
                is_failed = row["status"] == F
                assert (message.pk in dead) == is_failed, step
                assert (row["failed_at"] is not None) == is_failed, step
                assert bool(row["failure_reason"]) == is_failed, step
                if row["status"] == S:
                    assert row["sent_at"] is not None
        transaction.set_rollback(True)
