"""Receipts applied together: many recipients' acks and reads in one transaction."""

from __future__ import annotations

import uuid

import pytest

from apps.accounts.party import Party
from apps.messaging import services
from apps.messaging.models import Message, Status
from apps.messaging.services import Receipt, receipts_apply
from tests.factories import MessageFactory


@pytest.fixture
def sent(sender, mobile_user, stranger):
    """Two `sent` messages for each of two recipients."""
    return {
        user.pk: [MessageFactory(sender=sender, recipient=user, status=Status.SENT) for _ in range(2)]
        for user in (mobile_user, stranger)
    }


def _statuses() -> dict[uuid.UUID, str]:
    return dict(Message.objects.values_list("pk", "status"))


def test_receipts_of_several_recipients_apply_in_one_call(sent, mobile_user, stranger):
    mine, theirs = sent[mobile_user.pk], sent[stranger.pk]

    moved = receipts_apply(
        [
            Receipt(Party.mobile(mobile_user.pk), Status.DELIVERED, [str(m.pk) for m in mine]),
            Receipt(Party.mobile(stranger.pk), Status.READ, [str(theirs[0].pk)]),
        ]
    )

    assert sorted(moved) == sorted([mine[0].pk, mine[1].pk, theirs[0].pk])
    assert _statuses() == {
        mine[0].pk: Status.DELIVERED,
        mine[1].pk: Status.DELIVERED,
        theirs[0].pk: Status.READ,
        theirs[1].pk: Status.SENT,
    }


def test_a_receipt_for_someone_elses_message_in_a_batch_changes_nothing_of_it(sent, mobile_user, stranger):
    theirs = sent[stranger.pk]
    before = _statuses()

    moved = receipts_apply(
        [
            Receipt(
                Party.mobile(mobile_user.pk),
                Status.READ,
                [str(theirs[0].pk), "not-a-uuid", str(uuid.uuid4())],
            ),
            # The right id under the wrong kind of recipient is not its own either.
            Receipt(Party.business(stranger.pk), Status.DELIVERED, [str(theirs[1].pk)]),
        ]
    )

    assert moved == []
    assert _statuses() == before


def test_ack_and_read_of_one_message_in_one_batch_end_read_whatever_the_order(sent, mobile_user):
    message = sent[mobile_user.pk][0]

    receipts_apply(
        [
            Receipt(Party.mobile(mobile_user.pk), Status.READ, [message.pk]),
            Receipt(Party.mobile(mobile_user.pk), Status.DELIVERED, [message.pk]),
        ]
    )

    message.refresh_from_db()
    assert message.status == Status.READ
    assert message.delivered_at is not None and message.read_at is not None


def test_replayed_receipts_move_nothing(sent, mobile_user):
    ids = [m.pk for m in sent[mobile_user.pk]]
    assert len(services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=ids)) == 2
    before = _statuses()

    assert receipts_apply([Receipt(Party.mobile(mobile_user.pk), Status.DELIVERED, ids)] * 3) == []
    assert _statuses() == before
