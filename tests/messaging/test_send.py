"""Sending: gapless per-recipient seq, content rules, dispatch only after commit, broker outages."""

from __future__ import annotations

import base64
import json
import threading
from collections import defaultdict
from datetime import timedelta
from functools import partial

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.accounts.models import MobileUser
from apps.common import clock
from apps.messaging import relay, services
from apps.messaging.content import MAX_CONTENT_LENGTH, normalize_content
from apps.messaging.dispatch import QUEUE_FOR_PRIORITY
from apps.messaging.errors import RecipientNotFound
from apps.messaging.models import Message, Priority, Status
from tests.concurrency import run_together
from tests.factories import MobileUserFactory

DELIVER_TASK = "apps.messaging.tasks.deliver_chunk"
DUE_TASK = "apps.messaging.tasks.deliver_due"
# Outside the factories' +1 415 555 range, so nobody has it.
UNKNOWN_PHONE = "+442071838750"


# --- broker helpers (also used by test_sweeps) ------------------------------------------------


def queued_tasks(redis, queue: str = "default") -> list[tuple[str, list]]:
    """Return (task name, args) of the tasks waiting in a broker queue, oldest first.

    kombu's Redis transport keeps a queue as a Redis list of the same name (LPUSH, BRPOP).
    """
    tasks = []
    for raw in reversed(redis.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        tasks.append((envelope["headers"]["task"], args))
    return tasks


def dispatched_ids(redis, queue: str = "default") -> list[str]:
    """Return the ids of the messages that the delivery tasks waiting in a broker queue deliver.

    (A queue holds other tasks too: push windows, broadcast expansions.)

    A `deliver_chunk` task carries its ids; a `deliver_due` task claims the due `queued`
    messages of its lane when it runs: those are listed (oldest first, once however many such
    tasks wait), read without claiming them.
    """
    tasks = [(name, args) for name, args in queued_tasks(redis, queue) if name in (DELIVER_TASK, DUE_TASK)]
    ids = [pk for name, (chunk,) in tasks if name == DELIVER_TASK for pk in chunk]
    lanes = {lane for name, (lane,) in tasks if name == DUE_TASK}
    for lane in lanes:
        assert QUEUE_FOR_PRIORITY[lane] == queue  # a lane's task waits in the lane's own queue
        due = Message.objects.filter(status=Status.QUEUED, priority=lane, next_attempt_at__lte=clock.now())
        ids += [str(pk) for pk in due.order_by("next_attempt_at", "seq").values_list("pk", flat=True)]
    return ids


def _send(sender, recipient, **kwargs) -> Message:
    return services.message_send(
        sender=sender,
        recipient_phone_number=recipient.phone_number,
        content=kwargs.pop("content", "hi"),
        **kwargs,
    )


def _seqs(recipient) -> list[int]:
    return list(Message.objects.filter(recipient=recipient).order_by("seq").values_list("seq", flat=True))


# --- persistence and seq --------------------------------------------------------------------


def test_send_persists_queued_message_with_first_seq(sender, mobile_user):
    message = _send(sender, mobile_user, subject="Hello", priority=Priority.HIGH, content="hi there")

    stored = Message.objects.get()
    assert stored.pk == message.pk
    assert (stored.seq, stored.status, stored.retry_count) == (1, Status.QUEUED, 0)
    assert (stored.subject, stored.content, stored.priority) == ("Hello", "hi there", Priority.HIGH)
    assert stored.sent_at is stored.delivered_at is stored.read_at is stored.failed_at is None
    # A queued message is due for the outbox relay at once (it is its own outbox entry).
    assert stored.next_attempt_at <= timezone.now()
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 1


def test_seq_is_gapless_and_per_recipient(sender, mobile_user, stranger):
    sent = [_send(sender, r) for r in (mobile_user, stranger, mobile_user, mobile_user, stranger)]

    assert [m.seq for m in sent] == [1, 1, 2, 3, 2]
    assert _seqs(mobile_user) == [1, 2, 3]
    assert _seqs(stranger) == [1, 2]


def test_send_with_ttl_sets_expiry(sender, mobile_user):
    before = timezone.now()
    message = _send(sender, mobile_user, ttl_seconds=60)

    assert before + timedelta(seconds=60) <= message.expires_at <= timezone.now() + timedelta(seconds=60)


def test_send_to_unknown_recipient_stores_nothing_and_leaves_no_gap(sender, mobile_user):
    _send(sender, mobile_user)

    with pytest.raises(RecipientNotFound):
        services.message_send(sender=sender, recipient_phone_number=UNKNOWN_PHONE, content="hi")

    assert Message.objects.count() == 1
    assert _send(sender, mobile_user).seq == 2


def test_send_to_inactive_recipient_is_refused_without_using_a_seq(sender, mobile_user):
    MobileUser.objects.filter(pk=mobile_user.pk).update(is_active=False)

    with pytest.raises(RecipientNotFound):
        _send(sender, mobile_user)

    assert not Message.objects.exists()
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 0


def test_rolled_back_send_leaves_no_gap(sender, mobile_user):
    with pytest.raises(RuntimeError), transaction.atomic():
        _send(sender, mobile_user)
        raise RuntimeError("caller failed after the send")

    assert not Message.objects.exists()
    assert _send(sender, mobile_user).seq == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_get_gapless_unique_seqs(redis):
    from tests.factories import SenderFactory

    sender = SenderFactory()
    recipients = [MobileUserFactory(), MobileUserFactory()]
    threads_count, per_thread = 8, 10
    returned: dict[int, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def worker(index: int) -> None:
        for i in range(per_thread):
            recipient = recipients[(index + i) % 2]
            message = _send(sender, recipient)
            with lock:
                returned[recipient.pk].append(message.seq)

    run_together(*(partial(worker, i) for i in range(threads_count)))
    total = threads_count * per_thread
    assert Message.objects.count() == total
    for recipient in recipients:
        expected = list(range(1, total // 2 + 1))
        assert _seqs(recipient) == expected
        assert sorted(returned[recipient.pk]) == expected
        assert MobileUser.objects.get(pk=recipient.pk).last_seq == total // 2


@hypothesis_settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=20))
def test_seqs_strictly_increase_per_recipient(plan, sender, mobile_user, stranger):
    """Index 3 names nobody: those sends fail and must not disturb anyone's sequence."""
    with transaction.atomic():
        recipients = [mobile_user, stranger, MobileUserFactory()]
        last: dict[int, int] = defaultdict(int)
        for index in plan:
            if index == 3:
                with pytest.raises(RecipientNotFound):
                    services.message_send(sender=sender, recipient_phone_number=UNKNOWN_PHONE, content="x")
                continue
            recipient = recipients[index]
            seq = _send(sender, recipient).seq
            assert seq == last[recipient.pk] + 1
            last[recipient.pk] = seq
        for recipient in recipients:
            assert _seqs(recipient) == list(range(1, last[recipient.pk] + 1))
        transaction.set_rollback(True)


# --- content rules --------------------------------------------------------------------------


def test_html_is_stripped_from_text_content():
    assert normalize_content("<b>Hello</b> <i>you</i>", "text") == "Hello you"


def test_script_and_style_bodies_are_dropped():
    assert normalize_content("hi<script>alert(1)</script><style>p{}</style> there", "text") == "hi there"


def test_entities_are_decoded_to_plain_text():
    assert normalize_content("<p>Tom &amp; Jerry &lt;3</p>", "text") == "Tom & Jerry <3"


def test_plain_text_is_kept_as_is():
    assert normalize_content("  2 > 1, café  ", "text") == "  2 > 1, café  "


def test_json_content_is_kept_verbatim_including_angle_brackets():
    body = '{"html": "<b>bold</b>", "n": 1}'
    assert normalize_content(body, "json") == body


@pytest.mark.parametrize("body", ["{not json", "", "{'single': 'quotes'}", "[1,"])
def test_invalid_json_is_rejected(body):
    with pytest.raises(ValidationError):
        normalize_content(body, "json")


@pytest.mark.parametrize("body", ["", "   ", "\n\t", "<p></p>", "<script>x</script>"])
def test_empty_content_is_rejected(body):
    with pytest.raises(ValidationError):
        normalize_content(body, "text")


def test_content_at_the_limit_is_accepted_and_one_more_is_rejected():
    assert len(normalize_content("a" * MAX_CONTENT_LENGTH, "text")) == MAX_CONTENT_LENGTH
    with pytest.raises(ValidationError):
        normalize_content("a" * (MAX_CONTENT_LENGTH + 1), "text")
    assert MAX_CONTENT_LENGTH == 10_000


def test_api_stores_stripped_text(sender_client, mobile_user):
    response = sender_client.post(
        "/api/v1/messages/",
        {"recipient_phone_number": mobile_user.phone_number, "content": "<b>hi</b> there"},
        format="json",
    )

    assert response.status_code == 202, response.content
    assert Message.objects.get().content == "hi there"


def test_api_rejects_invalid_json_and_stores_nothing(sender_client, mobile_user):
    response = sender_client.post(
        "/api/v1/messages/",
        {"recipient_phone_number": mobile_user.phone_number, "content": "{oops", "content_type": "json"},
        format="json",
    )

    assert response.status_code == 400
    assert "content" in response.json()
    assert not Message.objects.exists()
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 0


# --- dispatch after commit ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_delivery_task_is_enqueued_only_after_commit(sender, mobile_user, redis):
    with transaction.atomic():
        message = _send(sender, mobile_user)
        assert dispatched_ids(redis) == []

    assert dispatched_ids(redis) == [str(message.pk)]


@pytest.mark.django_db(transaction=True)
def test_priority_picks_the_queue(sender, mobile_user, redis):
    high = _send(sender, mobile_user, priority=Priority.HIGH)
    low = _send(sender, mobile_user, priority=Priority.LOW)
    normal = _send(sender, mobile_user)

    assert dispatched_ids(redis, "high") == [str(high.pk)]
    assert dispatched_ids(redis, "low") == [str(low.pk)]
    assert dispatched_ids(redis, "default") == [str(normal.pk)]


@pytest.mark.django_db(transaction=True)
def test_rolled_back_send_publishes_nothing(sender, mobile_user, redis):
    with pytest.raises(RuntimeError), transaction.atomic():
        _send(sender, mobile_user)
        raise RuntimeError("rolled back")

    assert not Message.objects.exists()
    assert dispatched_ids(redis) == []
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 0


@pytest.mark.django_db(transaction=True)
def test_send_succeeds_with_broker_down_and_the_relay_dispatches_it_later(
    sender, mobile_user, redis, broker_down
):
    message = _send(sender, mobile_user)

    stored = Message.objects.get()
    assert (stored.pk, stored.status) == (message.pk, Status.QUEUED)
    assert dispatched_ids(redis) == []

    broker_down()  # the broker is back: the relay's next look asks for the lane's task

    assert relay.relay_round() == 1

    assert dispatched_ids(redis) == [str(message.pk)]
    assert Message.objects.get(pk=message.pk).status == Status.QUEUED  # nothing written before delivery


@pytest.mark.django_db(transaction=True)
def test_api_accepts_send_with_broker_down(sender_client, mobile_user, redis, broker_down):
    response = sender_client.post(
        "/api/v1/messages/",
        {"recipient_phone_number": mobile_user.phone_number, "content": "hi"},
        format="json",
    )

    assert response.status_code == 202, response.content
    message = Message.objects.get()
    assert (str(message.pk), message.seq, message.status) == (response.json()["id"], 1, Status.QUEUED)
    assert dispatched_ids(redis) == []
