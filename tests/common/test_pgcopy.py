"""copy_insert: rows stored by COPY read back exactly as bulk_create would have stored them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.common.pgcopy import copy_insert
from apps.messaging.models import Channel, DeliveryAttempt, Kind, Message, Outcome, Priority, Status
from tests.factories import MobileUserFactory

FIELDS = [f.attname for f in Message._meta.concrete_fields]


def _messages(sender, n: int) -> list[Message]:
    recipient = MobileUserFactory()
    now = timezone.now()
    return [
        Message(
            kind=Kind.ONE_WAY,
            sender=sender,
            recipient=recipient,
            seq=i + 1,
            content=f"héllo\ttab\nnewline \\ backslash {i}",
            priority=Priority.HIGH,
            status=Status.QUEUED,
            next_attempt_at=now,
            ttl_seconds=60 if i % 2 else None,
            expires_at=now + timedelta(seconds=60) if i % 2 else None,
        )
        for i in range(n)
    ]


def test_copied_messages_read_back_field_for_field_with_choices_stored_by_value(sender):
    messages = _messages(sender, 5)

    copy_insert(messages)

    stored = {m.pk: m for m in Message.objects.filter(pk__in=[m.pk for m in messages])}
    assert len(stored) == 5
    for message in messages:
        assert message.created_at is not None  # auto_now_add, stamped as save() would
        assert {f: getattr(stored[message.pk], f) for f in FIELDS} == {f: getattr(message, f) for f in FIELDS}
    assert set(Message.objects.values_list("status", "priority", "kind")) == {("queued", "high", "one_way")}
    assert not messages[0]._state.adding


def test_rows_with_database_made_ids_are_inserted(sender):
    [message] = _messages(sender, 1)
    copy_insert([message])
    now = timezone.now()

    copy_insert(
        [DeliveryAttempt(message=message, at=now, channel=Channel.WEBSOCKET, outcome=Outcome.SENT)] * 3
    )

    assert list(DeliveryAttempt.objects.values_list("channel", "outcome")) == [("websocket", "sent")] * 3


def test_a_constraint_violation_fails_the_whole_copy_and_stores_nothing(sender):
    first, second = _messages(sender, 2)
    second.seq = first.seq  # (recipient, seq) is unique

    with pytest.raises(IntegrityError), transaction.atomic():
        copy_insert([first, second])

    assert not Message.objects.exists()
