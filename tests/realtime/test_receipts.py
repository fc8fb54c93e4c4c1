"""Group commit of receipts: concurrent sockets' acks share transactions, each still applied."""

from __future__ import annotations

import asyncio

import pytest

from apps.accounts.party import Party
from apps.messaging.models import Message, Status
from apps.messaging.services import Receipt
from apps.realtime import receipts
from tests.factories import MessageFactory, MobileUserFactory

from .conftest import async_test, db


@pytest.fixture
def spy_batches(monkeypatch):
    """Record the size of every batch the batcher applies (the real function still runs)."""
    sizes: list[int] = []
    real = receipts._apply

    async def apply(batch):
        sizes.append(len(batch))
        return await real(batch)

    monkeypatch.setattr(receipts, "_apply", apply)
    return sizes


def _build(sender, n: int) -> list[Message]:
    users = MobileUserFactory.create_batch(n)
    return [MessageFactory(sender=sender, recipient=user, status=Status.SENT) for user in users]


@async_test
async def test_concurrent_acks_of_many_sockets_are_all_recorded_in_fewer_transactions(
    transactional_db, sender, spy_batches
):
    messages = await db(_build)(sender, 40)

    await asyncio.gather(
        *(
            receipts.receipt_apply(Receipt(Party.mobile(m.recipient_id), Status.DELIVERED, [str(m.pk)]))
            for m in messages
        )
    )

    statuses = await db(lambda: set(Message.objects.values_list("status", flat=True)))()
    assert statuses == {Status.DELIVERED}
    assert sum(spy_batches) == 40
    assert len(spy_batches) < 40  # receipts that arrived during a flush went together


@async_test
async def test_a_failing_batch_fails_every_waiting_socket_and_the_next_batch_still_runs(
    transactional_db, sender, monkeypatch
):
    [message] = await db(_build)(sender, 1)
    real = receipts._apply

    async def broken(batch):
        raise ConnectionError("database gone")

    monkeypatch.setattr(receipts, "_apply", broken)
    with pytest.raises(ConnectionError):
        await receipts.receipt_apply(
            Receipt(Party.mobile(message.recipient_id), Status.DELIVERED, [message.pk])
        )

    monkeypatch.setattr(receipts, "_apply", real)
    await receipts.receipt_apply(Receipt(Party.mobile(message.recipient_id), Status.DELIVERED, [message.pk]))
    await db(message.refresh_from_db)()
    assert message.status == Status.DELIVERED
