"""The messaging counters move with what really happened: accepted, delivered (timed), read, failed."""

from __future__ import annotations

import pytest

from apps.accounts.party import Party
from apps.messaging import services
from apps.messaging.models import Message
from tests.factories import MobileUserFactory
from tests.ops.test_metrics import scrape, value

pytestmark = pytest.mark.django_db(transaction=True)


def _send(sender, recipient, **kwargs) -> Message:
    return services.message_send(
        sender=sender, recipient_phone_number=recipient.phone_number, content="hi", **kwargs
    )


def test_sends_acks_reads_and_failures_are_counted_once_each(anonymous_client, sender, mobile_user, redis):
    before = scrape(anonymous_client)
    messages = [_send(sender, mobile_user) for _ in range(3)] + [_send(sender, mobile_user, priority="high")]
    services.messages_send_batch(
        sender=sender,
        items=[
            {"recipient_phone_number": u.phone_number, "content": "b"}
            for u in MobileUserFactory.create_batch(2)
        ],
    )
    ids = [str(m.pk) for m in messages]
    services.messages_acknowledge(recipient=Party.mobile(mobile_user.pk), message_ids=ids[:2])
    services.messages_acknowledge(
        recipient=Party.mobile(mobile_user.pk), message_ids=ids[:2]
    )  # a repeat moves nothing
    services.messages_mark_read(recipient=Party.mobile(mobile_user.pk), message_ids=ids[:1])
    services.messages_fail(Message.objects.filter(pk=messages[2].pk), reason="expired")
    services.messages_acknowledge(
        recipient=Party.mobile(mobile_user.pk + 1000), message_ids=ids[3:]
    )  # not its own

    after = scrape(anonymous_client)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("messaging_messages_accepted_total", kind="one_way", priority="normal") == 5
    assert delta("messaging_messages_accepted_total", kind="one_way", priority="high") == 1
    assert delta("messaging_messages_delivered_total") == 2
    assert delta("messaging_delivery_seconds_count") == 2
    assert delta("messaging_messages_read_total") == 1
    assert delta("messaging_messages_failed_total", reason="expired") == 1


def test_a_rolled_back_send_is_not_counted(anonymous_client, sender, mobile_user, redis):
    from django.db import transaction

    before = scrape(anonymous_client)
    with pytest.raises(RuntimeError), transaction.atomic():
        _send(sender, mobile_user)
        raise RuntimeError("rolled back")
    after = scrape(anonymous_client)

    name, labels = "messaging_messages_accepted_total", {"kind": "one_way", "priority": "normal"}
    assert value(after, name, **labels) == value(before, name, **labels)
