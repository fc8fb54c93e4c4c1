"""Idempotency-Key at the service level: one message per (sender, key), whatever the replays."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.accounts.models import MobileUser
from apps.messaging import services
from apps.messaging.errors import IdempotencyKeyInFlight, IdempotencyKeyMismatch, RecipientNotFound
from apps.messaging.models import IdempotencyKey, Message
from apps.messaging.services.idempotency import IDEMPOTENCY_LEASE
from tests.messaging.test_send import UNKNOWN_PHONE


def _body(recipient, content: str = "hi") -> dict:
    return {"recipient_phone_number": recipient.phone_number, "content": content}


def _send(sender, key: str, body: dict):
    return services.message_send_idempotent(
        sender=sender, idempotency_key=key, body_hash=services.request_hash(body), **body
    )


def test_first_use_creates_the_message_and_binds_the_key(sender, mobile_user):
    message, created = _send(sender, "k1", _body(mobile_user))

    assert created is True
    assert Message.objects.get() == message
    record = IdempotencyKey.objects.get()
    assert (record.sender_id, record.key, record.message_id) == (sender.pk, "k1", message.pk)


def test_replay_with_same_body_returns_the_original_and_creates_nothing(sender, mobile_user):
    original, _ = _send(sender, "k1", _body(mobile_user))

    replayed, created = _send(sender, "k1", _body(mobile_user))

    assert (replayed.pk, created) == (original.pk, False)
    assert Message.objects.count() == 1
    assert IdempotencyKey.objects.count() == 1
    # No sequence number was spent on the replay.
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 1


def test_reuse_with_different_body_is_refused_and_stores_nothing(sender, mobile_user):
    original, _ = _send(sender, "k1", _body(mobile_user))

    with pytest.raises(IdempotencyKeyMismatch):
        _send(sender, "k1", _body(mobile_user, content="something else"))

    assert list(Message.objects.all()) == [original]
    assert IdempotencyKey.objects.get().message_id == original.pk
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 1


def test_request_hash_ignores_key_order_but_not_values():
    assert services.request_hash({"a": 1, "b": "x"}) == services.request_hash({"b": "x", "a": 1})
    assert services.request_hash({"a": 1}) != services.request_hash({"a": 2})


def _claim(sender, key: str, body: dict, age: timedelta) -> IdempotencyKey:
    """A key claimed by a request that has not stored (or never stored) its message."""
    record = IdempotencyKey.objects.create(sender=sender, key=key, request_hash=services.request_hash(body))
    IdempotencyKey.objects.filter(pk=record.pk).update(created_at=timezone.now() - age)
    return record


def test_key_claimed_by_a_request_in_flight_is_refused(sender, mobile_user):
    body = _body(mobile_user)
    _claim(sender, "k1", body, age=timedelta(seconds=5))

    with pytest.raises(IdempotencyKeyInFlight):
        _send(sender, "k1", body)

    assert not Message.objects.exists()
    assert IdempotencyKey.objects.get().message_id is None
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 0


def test_key_whose_claim_outlived_the_lease_is_taken_over(sender, mobile_user):
    body = _body(mobile_user)
    claim = _claim(sender, "k1", body, age=IDEMPOTENCY_LEASE + timedelta(seconds=1))
    before = timezone.now()

    message, created = _send(sender, "k1", body)

    assert created is True
    assert Message.objects.get() == message
    record = IdempotencyKey.objects.get()
    assert (record.pk, record.message_id) == (claim.pk, message.pk)
    assert record.created_at >= before
    assert _send(sender, "k1", body) == (message, False)


def test_stale_claim_with_different_body_is_still_a_mismatch(sender, mobile_user):
    _claim(sender, "k1", _body(mobile_user), age=timedelta(hours=1))

    with pytest.raises(IdempotencyKeyMismatch):
        _send(sender, "k1", _body(mobile_user, content="other"))

    assert not Message.objects.exists()


def test_failed_send_frees_the_key(sender, mobile_user):
    bad = {"recipient_phone_number": UNKNOWN_PHONE, "content": "hi"}

    with pytest.raises(RecipientNotFound):
        _send(sender, "k1", bad)

    assert not IdempotencyKey.objects.exists()
    assert not Message.objects.exists()
    # A corrected retry may use the same key, even with another body.
    message, created = _send(sender, "k1", _body(mobile_user))
    assert created is True
    assert IdempotencyKey.objects.get().message_id == message.pk


def test_keys_are_scoped_per_sender(sender, other_sender, mobile_user):
    first, created_first = _send(sender, "shared", _body(mobile_user))
    second, created_second = _send(other_sender, "shared", _body(mobile_user))

    assert created_first and created_second
    assert first.pk != second.pk
    assert (first.sender_id, second.sender_id) == (sender.pk, other_sender.pk)
    assert [m.seq for m in (first, second)] == [1, 2]
    assert IdempotencyKey.objects.count() == 2
    # Another sender's key with another body is no mismatch for this one.
    assert _send(other_sender, "k2", _body(mobile_user, "x"))[1] is True
    assert _send(sender, "k2", _body(mobile_user, "y"))[1] is True


@hypothesis_settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    replays=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(["one", "two"])),
        min_size=1,
        max_size=15,
    )
)
def test_replays_create_exactly_one_message_per_distinct_key(replays, sender, mobile_user):
    with transaction.atomic():
        first_body: dict[str, str] = {}
        message_for: dict[str, object] = {}
        for key, content in replays:
            expected_body = first_body.setdefault(key, content)
            if content != expected_body:
                with pytest.raises(IdempotencyKeyMismatch):
                    _send(sender, key, _body(mobile_user, content))
                continue
            message, created = _send(sender, key, _body(mobile_user, content))
            assert created is (key not in message_for)
            assert message.pk == message_for.setdefault(key, message.pk)
            assert message.content == content

        assert Message.objects.count() == len(first_body)
        assert set(Message.objects.values_list("pk", flat=True)) == set(message_for.values())
        assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == len(first_body)
        transaction.set_rollback(True)


def test_explicit_null_and_absent_field_hash_the_same_but_values_differ():
    base = {"recipient_phone_number": "+14155550100", "content": "hi"}
    assert services.request_hash({**base, "ttl_seconds": None}) == services.request_hash(base)
    assert services.request_hash({**base, "ttl_seconds": 60}) != services.request_hash(base)
