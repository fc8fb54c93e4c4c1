"""Batch send: all validated before any is stored, one transaction, gapless seqs, chunked dispatch."""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from functools import partial

import pytest

from apps.accounts.models import MobileUser
from apps.messaging import services
from apps.messaging.models import Message, Priority, Status
from tests.concurrency import run_together
from tests.factories import MobileUserFactory, SenderFactory
from tests.messaging.test_send import DUE_TASK, UNKNOWN_PHONE, queued_tasks

URL = "/api/v1/messages/batch/"
CHUNK_TASK = "apps.messaging.tasks.deliver_chunk"


def _item(recipient: MobileUser, content: str = "hello", **extra) -> dict:
    return {"recipient_phone_number": recipient.phone_number, "content": content, **extra}


def _seqs(recipient: MobileUser) -> list[int]:
    return list(Message.objects.filter(recipient=recipient).order_by("seq").values_list("seq", flat=True))


def _last_seq(recipient: MobileUser) -> int:
    return MobileUser.objects.values_list("last_seq", flat=True).get(pk=recipient.pk)


def test_batch_stores_every_message_with_consecutive_seqs_per_recipient(sender_client, mobile_user, stranger):
    items = [_item(mobile_user, "a"), _item(stranger, "b"), _item(mobile_user, "c", priority="high")]

    response = sender_client.post(URL, {"messages": items}, format="json")

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["total"] == 3
    stored = {str(m.pk): m for m in Message.objects.all()}
    assert set(body["ids"]) == set(stored) and len(stored) == 3
    # ids come back in the order of the items.
    assert [stored[pk].content for pk in body["ids"]] == ["a", "b", "c"]
    assert [stored[pk].seq for pk in body["ids"]] == [1, 1, 2]
    assert {m.status for m in stored.values()} == {Status.QUEUED}
    assert stored[body["ids"][2]].priority == "high"
    assert _last_seq(mobile_user) == 2 and _last_seq(stranger) == 1


def test_batch_continues_a_recipients_sequence_after_single_sends(sender, sender_client, mobile_user):
    services.message_send(sender=sender, recipient_phone_number=mobile_user.phone_number, content="first")

    response = sender_client.post(URL, {"messages": [_item(mobile_user), _item(mobile_user)]}, format="json")

    assert response.status_code == 202
    assert _seqs(mobile_user) == [1, 2, 3]


def test_batch_with_one_invalid_item_stores_nothing_and_names_its_index(sender_client, mobile_user):
    items = [_item(mobile_user), _item(mobile_user, content=""), _item(mobile_user, content_type="json")]

    response = sender_client.post(URL, {"messages": items}, format="json")

    assert response.status_code == 400
    errors = response.json()["messages"]
    assert set(errors) == {"1", "2"}
    assert "content" in errors["1"] and "content" in errors["2"]
    assert Message.objects.count() == 0
    assert _last_seq(mobile_user) == 0


def test_batch_with_an_unknown_recipient_stores_nothing_and_uses_no_seq(sender_client, mobile_user, stranger):
    items = [_item(mobile_user), _item(stranger), {"recipient_phone_number": UNKNOWN_PHONE, "content": "x"}]

    response = sender_client.post(URL, {"messages": items}, format="json")

    assert response.status_code == 400
    assert list(response.json()["messages"]) == ["2"]
    assert "recipient_phone_number" in response.json()["messages"]["2"]
    assert Message.objects.count() == 0
    assert _last_seq(mobile_user) == 0 and _last_seq(stranger) == 0


def test_batch_with_a_foreign_attachment_rolls_back_every_message(sender_client, mobile_user):
    items = [_item(mobile_user), _item(mobile_user, attachment_ids=[str(uuid.uuid4())])]

    response = sender_client.post(URL, {"messages": items}, format="json")

    assert response.status_code == 400
    assert list(response.json()["messages"]) == ["1"]
    assert "attachment_ids" in response.json()["messages"]["1"]
    assert Message.objects.count() == 0
    assert _last_seq(mobile_user) == 0


@pytest.mark.parametrize(
    "body",
    [{"messages": []}, {"messages": "nope"}, {}, [1, 2]],
    ids=["empty", "not-a-list", "missing", "top-level-list"],
)
def test_batch_without_a_list_of_messages_is_refused(sender_client, body):
    response = sender_client.post(URL, body, format="json")

    assert response.status_code == 400
    assert Message.objects.count() == 0


def test_batch_of_more_than_a_thousand_is_refused_before_validation(sender_client, mobile_user):
    response = sender_client.post(URL, {"messages": [_item(mobile_user)] * 1001}, format="json")

    assert response.status_code == 400
    assert "1,000" in response.json()["detail"]
    assert Message.objects.count() == 0


def test_batch_of_a_thousand_is_accepted(sender_client, mobile_user, stranger):
    items = [_item(mobile_user if i % 2 else stranger, f"m{i}") for i in range(1000)]

    response = sender_client.post(URL, {"messages": items}, format="json")

    assert response.status_code == 202
    assert response.json()["total"] == 1000
    assert _seqs(mobile_user) == list(range(1, 501))
    assert _seqs(stranger) == list(range(1, 501))


def test_batch_needs_the_send_permission(mobile_client, mobile_user):
    response = mobile_client.post(URL, {"messages": [_item(mobile_user)]}, format="json")

    assert response.status_code == 403
    assert Message.objects.count() == 0


def test_batch_is_dispatched_after_commit_in_chunks_on_its_priority_lanes(
    redis, sender, mobile_user, stranger, settings, django_capture_on_commit_callbacks
):
    settings.MESSAGING_DELIVERY_CHUNK = 2
    items = [_item(mobile_user, f"n{i}") for i in range(3)] + [
        _item(stranger, "urgent", priority="high"),
        _item(stranger, "later", priority="low"),
    ]

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        messages = services.messages_send_batch(sender=sender, items=items)
        # Nothing is enqueued while the transaction is open.
        assert redis.llen("default") == redis.llen("high") == redis.llen("low") == 0
    for callback in callbacks:
        callback()

    lanes = {queue: queued_tasks(redis, queue) for queue in ("high", "default", "low")}
    assert lanes == {
        "high": [(DUE_TASK, [Priority.HIGH])],
        "default": [(DUE_TASK, [Priority.NORMAL])],
        "low": [(DUE_TASK, [Priority.LOW])],
    }
    by_content = {m.content: m.pk for m in messages}

    def claimed(priority: str) -> list[str]:
        queued = set(Message.objects.filter(status=Status.QUEUED).values_list("pk", flat=True))
        services.messages_deliver_due(priority=priority)
        left = set(Message.objects.filter(status=Status.QUEUED).values_list("pk", flat=True))
        return sorted(content for content, pk in by_content.items() if pk in queued - left)

    # Chunks of MESSAGING_DELIVERY_CHUNK, oldest first; a full chunk asks for the next task.
    assert claimed(Priority.NORMAL) == ["n0", "n1"]
    assert len(queued_tasks(redis, "default")) == 2
    assert claimed(Priority.NORMAL) == ["n2"]
    assert claimed(Priority.HIGH) == ["urgent"]
    assert claimed(Priority.LOW) == ["later"]


@pytest.mark.django_db(transaction=True)
def test_batches_and_single_sends_racing_on_the_same_recipients_keep_seqs_gapless(redis):
    sender = SenderFactory()
    recipients = [MobileUserFactory() for _ in range(3)]
    threads_count, rounds = 6, 4
    returned: dict[int, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def worker(index: int) -> None:
        for i in range(rounds):
            if index % 2:
                # Recipients in a different order per thread: their locks must still be
                # taken in id order, or two batches would deadlock.
                order = recipients[index % 3 :] + recipients[: index % 3]
                items = [_item(r, f"b{index}-{i}") for r in order + order[:1]]
                stored = services.messages_send_batch(sender=sender, items=items)
            else:
                r = recipients[(index + i) % 3]
                stored = [
                    services.message_send(sender=sender, recipient_phone_number=r.phone_number, content="s")
                ]
            with lock:
                for m in stored:
                    returned[m.recipient_id].append(m.seq)

    run_together(*(partial(worker, i) for i in range(threads_count)))
    for recipient in recipients:
        count = Message.objects.filter(recipient=recipient).count()
        assert _seqs(recipient) == list(range(1, count + 1))
        assert sorted(returned[recipient.pk]) == list(range(1, count + 1))
        assert _last_seq(recipient) == count
    assert Message.objects.count() == sum(len(v) for v in returned.values())


def test_batch_replayed_with_its_idempotency_key_returns_the_same_ids_and_stores_nothing_more(
    sender_client, mobile_user
):
    body = {"messages": [_item(mobile_user, "a"), _item(mobile_user, "b")]}
    first = sender_client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="batch-1")

    replay = sender_client.post(URL, body, format="json", HTTP_IDEMPOTENCY_KEY="batch-1")
    other_body = sender_client.post(
        URL, {"messages": [_item(mobile_user, "c")]}, format="json", HTTP_IDEMPOTENCY_KEY="batch-1"
    )

    assert first.status_code == 202
    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert other_body.status_code == 422
    assert Message.objects.count() == 2
    assert _last_seq(mobile_user) == 2


def test_invalid_batch_frees_its_idempotency_key(sender_client, mobile_user):
    bad = {"messages": [_item(mobile_user), {"recipient_phone_number": UNKNOWN_PHONE, "content": "x"}]}
    assert sender_client.post(URL, bad, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 400

    good = {"messages": [_item(mobile_user)]}
    response = sender_client.post(URL, good, format="json", HTTP_IDEMPOTENCY_KEY="k")

    assert response.status_code == 202
    assert Message.objects.count() == 1
