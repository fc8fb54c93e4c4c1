"""HTTP contract of the senders' message endpoints: POST/GET /api/v1/messages/ and GET .../{id}/."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.accounts.models import MobileUser
from apps.messaging.inputs import OneWayMessageInputSerializer
from apps.messaging.models import (
    Channel,
    DeliveryAttempt,
    IdempotencyKey,
    Kind,
    Message,
    Outcome,
    Status,
)
from apps.messaging.services import messages_fail, request_hash
from tests.conftest import client_for
from tests.factories import MessageFactory, MobileUserFactory, SenderFactory

URL = "/api/v1/messages/"
pytestmark = pytest.mark.django_db


def send(client, body, **headers):
    return client.post(URL, body, format="json", **headers)


def stored_state(recipient: MobileUser) -> tuple[int, int]:
    """Return (messages stored, recipient's last seq): what a refused send must leave alone."""
    return Message.objects.count(), MobileUser.objects.get(pk=recipient.pk).last_seq


# --- POST messages/: accepted -----------------------------------------------------------------


def test_send_answers_202_with_the_full_representation(sender_client, sender, mobile_user):
    before = timezone.now()
    response = send(
        sender_client,
        {
            "recipient_phone_number": mobile_user.phone_number,
            "subject": "Order",
            "content": "Your order shipped",
            "priority": "high",
            "ttl_seconds": 3600,
        },
    )

    assert response.status_code == 202, response.content
    body = response.json()
    message = Message.objects.get()
    assert body["id"] == str(message.id)
    assert body["seq"] == 1 == message.seq
    assert body["status"] == Status.QUEUED
    assert body["kind"] == Kind.ONE_WAY
    assert body["conversation_id"] is None
    assert body["recipient_phone_number"] == mobile_user.phone_number
    assert (body["subject"], body["content"], body["content_type"]) == ("Order", "Your order shipped", "text")
    assert body["priority"] == "high"
    assert body["retry_count"] == 0
    assert body["failure_reason"] == ""
    assert body["ttl_seconds"] == 3600
    assert body["attachments"] == []
    for stamp in ("sent_at", "delivered_at", "read_at", "failed_at"):
        assert body[stamp] is None
    assert before <= message.created_at <= timezone.now()
    assert abs((message.expires_at - message.created_at).total_seconds() - 3600) < 1
    assert message.sender == sender
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 1


def test_single_send_stays_within_its_query_budget(sender_client, mobile_user, django_assert_max_num_queries):
    """A regression guard for the hot path: token, permissions, the send transaction, nothing more.

    (token 1, permissions 2, BEGIN + seq bump + recipient + insert + COMMIT 5)
    """
    send(sender_client, {"recipient_phone_number": mobile_user.phone_number, "content": "warm-up"})
    with django_assert_max_num_queries(8):
        response = send(sender_client, {"recipient_phone_number": mobile_user.phone_number, "content": "hi"})
    assert response.status_code == 202
    assert response.json()["recipient_phone_number"] == mobile_user.phone_number
    assert response.json()["attachments"] == []


def test_send_defaults_content_type_priority_and_subject(sender_client, mobile_user):
    response = send(sender_client, {"recipient_phone_number": mobile_user.phone_number, "content": "hi"})

    assert response.status_code == 202
    body = response.json()
    assert (body["content_type"], body["priority"], body["subject"]) == ("text", "normal", "")
    assert body["ttl_seconds"] is None and body["expires_at"] is None


def test_consecutive_sends_take_consecutive_seqs(sender_client, other_sender_client, mobile_user):
    seqs = [
        send(client, {"recipient_phone_number": mobile_user.phone_number, "content": f"m{i}"}).json()["seq"]
        for i, client in enumerate([sender_client, other_sender_client, sender_client])
    ]

    assert seqs == [1, 2, 3]


@pytest.mark.parametrize("written", ["+1 415-555-0123", "+1 (415) 555-0123", " +14155550123 "])
def test_send_normalises_the_phone_number_to_e164(sender_client, written):
    recipient = MobileUserFactory(phone_number="+14155550123")

    response = send(sender_client, {"recipient_phone_number": written, "content": "hi"})

    assert response.status_code == 202, response.content
    assert response.json()["recipient_phone_number"] == "+14155550123"
    assert Message.objects.get().recipient == recipient


def test_send_strips_html_from_text_content(sender_client, mobile_user):
    response = send(
        sender_client,
        {
            "recipient_phone_number": mobile_user.phone_number,
            "content": "<b>hi</b> <script>x()</script>there",
        },
    )

    assert response.status_code == 202
    assert response.json()["content"] == "hi there"
    assert Message.objects.get().content == "hi there"


def test_send_keeps_json_content_verbatim(sender_client, mobile_user):
    content = '{"html": "<b>kept</b>",  "n": [1, 2]}'

    response = send(
        sender_client,
        {"recipient_phone_number": mobile_user.phone_number, "content": content, "content_type": "json"},
    )

    assert response.status_code == 202
    assert response.json()["content"] == content
    assert Message.objects.get().content == content


def test_send_accepts_content_of_exactly_10000_chars(sender_client, mobile_user):
    response = send(
        sender_client, {"recipient_phone_number": mobile_user.phone_number, "content": "x" * 10_000}
    )

    assert response.status_code == 202
    assert len(Message.objects.get().content) == 10_000


# --- POST messages/: refused, and nothing stored ----------------------------------------------


def _valid_body(phone: str) -> dict:
    return {"recipient_phone_number": phone, "content": "hello"}


INVALID = {
    "malformed_phone": ({"recipient_phone_number": "4155550100"}, "recipient_phone_number"),
    "unparseable_phone": ({"recipient_phone_number": "+999 123"}, "recipient_phone_number"),
    "missing_phone": ({"recipient_phone_number": None}, "recipient_phone_number"),
    "missing_content": ({"content": None}, "content"),
    "empty_content": ({"content": ""}, "content"),
    "whitespace_content": ({"content": "   \n\t "}, "content"),
    "too_long_content": ({"content": "x" * 10_001}, "content"),
    "only_html_tags": ({"content": "<p><br></p><script>alert(1)</script>"}, "content"),
    "invalid_json_content": ({"content": "{not json", "content_type": "json"}, "content"),
    "bad_content_type": ({"content_type": "html"}, "content_type"),
    "bad_priority": ({"priority": "urgent"}, "priority"),
    "long_subject": ({"subject": "s" * 201}, "subject"),
    "zero_ttl": ({"ttl_seconds": 0}, "ttl_seconds"),
    "negative_ttl": ({"ttl_seconds": -5}, "ttl_seconds"),
    "fractional_ttl": ({"ttl_seconds": 1.5}, "ttl_seconds"),
    "text_ttl": ({"ttl_seconds": "soon"}, "ttl_seconds"),
    "six_attachments": ({"attachment_ids": [str(uuid.uuid4()) for _ in range(6)]}, "attachment_ids"),
    "non_uuid_attachment": ({"attachment_ids": ["not-a-uuid"]}, "attachment_ids"),
}


@pytest.mark.parametrize("case", INVALID.values(), ids=INVALID.keys())
def test_invalid_send_is_400_naming_the_field_and_stores_nothing(sender_client, mobile_user, case):
    changes, field = case
    body = {**_valid_body(mobile_user.phone_number), **changes}
    body = {k: v for k, v in body.items() if v is not None}
    before = stored_state(mobile_user)

    response = send(sender_client, body)

    assert response.status_code == 400, response.content
    errors = response.json()
    assert errors["detail"]
    assert field in errors, errors
    assert stored_state(mobile_user) == before
    assert not IdempotencyKey.objects.exists()


def test_unknown_recipient_is_404_with_a_clear_detail(sender_client, mobile_user):
    before = stored_state(mobile_user)

    response = send(sender_client, _valid_body("+14155559999"))

    assert response.status_code == 404
    assert "+14155559999" in response.json()["detail"]
    assert "mobile user" in response.json()["detail"]
    assert stored_state(mobile_user) == before


def test_inactive_recipient_is_404_and_its_seq_does_not_move(sender_client):
    inactive = MobileUserFactory(is_active=False)

    response = send(sender_client, _valid_body(inactive.phone_number))

    assert response.status_code == 404
    assert response.json()["detail"]
    assert stored_state(inactive) == (0, 0)


def test_non_json_body_is_400_and_stores_nothing(sender_client, mobile_user):
    response = sender_client.post(URL, data="{recipient: nope", content_type="application/json")

    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]
    assert stored_state(mobile_user) == (0, 0)


def test_json_array_body_is_400_and_stores_nothing(sender_client, mobile_user):
    response = send(sender_client, [_valid_body(mobile_user.phone_number)])

    assert response.status_code == 400
    assert response.json()["detail"]
    assert stored_state(mobile_user) == (0, 0)


@pytest.mark.parametrize(
    "authorization",
    [None, "Token not-a-real-token", "Token", "Token two parts", "Bearer abc"],
    ids=["missing", "invalid", "no_key", "three_parts", "other_scheme"],
)
def test_send_without_a_valid_token_is_401_and_stores_nothing(anonymous_client, mobile_user, authorization):
    if authorization is not None:
        anonymous_client.credentials(HTTP_AUTHORIZATION=authorization)

    response = send(anonymous_client, _valid_body(mobile_user.phone_number))

    assert response.status_code == 401
    assert response.json()["detail"]
    assert response["WWW-Authenticate"] == "Token"
    assert stored_state(mobile_user) == (0, 0)


def test_mobile_user_cannot_send_403(mobile_client, stranger):
    response = send(mobile_client, _valid_body(stranger.phone_number))

    assert response.status_code == 403
    assert response.json()["detail"]
    assert stored_state(stranger) == (0, 0)


def test_sender_without_send_message_permission_is_403(mobile_user):
    sender = SenderFactory()
    sender.user_permissions.clear()
    client = client_for(sender)

    response = send(client, _valid_body(mobile_user.phone_number))

    assert response.status_code == 403
    assert "send_message" in response.json()["detail"]
    assert stored_state(mobile_user) == (0, 0)
    assert client.get(URL).status_code == 403


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.one_of(
        st.text(max_size=40),
        st.text(alphabet="<>/ab &;", max_size=30),
        st.sampled_from(["<b>x</b>", "<i></i>", " ", "x" * 10_001, "&lt;tag&gt;"]),
    ),
    content_type=st.sampled_from(["text", "json"]),
)
def test_any_send_is_accepted_whole_or_refused_without_a_trace(
    sender_client, mobile_user, content, content_type
):
    before_count, before_seq = stored_state(mobile_user)

    response = send(
        sender_client,
        {
            "recipient_phone_number": mobile_user.phone_number,
            "content": content,
            "content_type": content_type,
        },
    )

    assert response.status_code in (202, 400), response.content
    if response.status_code == 400:
        assert stored_state(mobile_user) == (before_count, before_seq)
        return
    body = response.json()
    stored = Message.objects.get(pk=body["id"])
    assert stored_state(mobile_user) == (before_count + 1, before_seq + 1)
    assert stored.seq == body["seq"] == before_seq + 1
    assert stored.content == body["content"]
    assert stored.content.strip() and len(stored.content) <= 10_000
    if content_type == "json":
        assert stored.content == content
        json.loads(stored.content)


# --- Idempotency-Key --------------------------------------------------------------------------


def test_idempotent_replay_returns_the_original_with_200_and_stores_nothing_new(sender_client, mobile_user):
    body = _valid_body(mobile_user.phone_number)

    first = send(sender_client, body, HTTP_IDEMPOTENCY_KEY="order-42")
    replay = send(sender_client, body, HTTP_IDEMPOTENCY_KEY="order-42")

    assert first.status_code == 202
    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert stored_state(mobile_user) == (1, 1)
    assert IdempotencyKey.objects.get().message_id == uuid.UUID(first.json()["id"])


def test_idempotency_key_reused_with_another_body_is_422(sender_client, mobile_user):
    send(sender_client, _valid_body(mobile_user.phone_number), HTTP_IDEMPOTENCY_KEY="k1")

    response = send(
        sender_client,
        {**_valid_body(mobile_user.phone_number), "content": "other"},
        HTTP_IDEMPOTENCY_KEY="k1",
    )

    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["detail"]
    assert stored_state(mobile_user) == (1, 1)


def test_idempotency_key_claimed_and_in_flight_is_409(sender_client, sender, mobile_user):
    body = _valid_body(mobile_user.phone_number)
    serializer = OneWayMessageInputSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    IdempotencyKey.objects.create(
        sender=sender, key="busy", request_hash=request_hash(serializer.validated_data)
    )

    response = send(sender_client, body, HTTP_IDEMPOTENCY_KEY="busy")

    assert response.status_code == 409
    assert response.json()["detail"]
    assert stored_state(mobile_user) == (0, 0)
    assert IdempotencyKey.objects.get(key="busy").message_id is None


@pytest.mark.parametrize(
    "key", ["k" * 256, "   ", "a\x00b", "a\nb"], ids=["too_long", "blank", "nul", "newline"]
)
def test_bad_idempotency_key_is_400_and_stores_nothing(sender_client, mobile_user, key):
    response = send(sender_client, _valid_body(mobile_user.phone_number), HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()
    assert stored_state(mobile_user) == (0, 0)
    assert not IdempotencyKey.objects.exists()


def test_idempotency_key_of_255_chars_is_accepted(sender_client, mobile_user):
    response = send(sender_client, _valid_body(mobile_user.phone_number), HTTP_IDEMPOTENCY_KEY="k" * 255)

    assert response.status_code == 202


def test_idempotency_keys_are_scoped_per_sender(sender_client, other_sender_client, mobile_user):
    body = _valid_body(mobile_user.phone_number)

    mine = send(sender_client, body, HTTP_IDEMPOTENCY_KEY="shared")
    theirs = send(other_sender_client, body, HTTP_IDEMPOTENCY_KEY="shared")

    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.json()["id"] != theirs.json()["id"]
    assert stored_state(mobile_user) == (2, 2)


def test_failed_idempotent_send_frees_its_key_for_a_corrected_retry(sender_client, mobile_user):
    missing = send(sender_client, _valid_body("+14155559998"), HTTP_IDEMPOTENCY_KEY="retry-me")
    assert missing.status_code == 404
    assert not IdempotencyKey.objects.exists()

    fixed = send(sender_client, _valid_body(mobile_user.phone_number), HTTP_IDEMPOTENCY_KEY="retry-me")

    assert fixed.status_code == 202
    assert stored_state(mobile_user) == (1, 1)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    replays=st.integers(min_value=1, max_value=4),
    # What an HTTP header can carry: latin-1, printable.
    key=st.text(st.characters(min_codepoint=32, max_codepoint=255), min_size=1, max_size=40).filter(
        lambda k: k.strip() and k.isprintable()
    ),
)
def test_replaying_a_key_any_number_of_times_stores_one_message(sender_client, mobile_user, replays, key):
    before_count, before_seq = stored_state(mobile_user)
    body = _valid_body(mobile_user.phone_number)

    answers = [send(sender_client, body, HTTP_IDEMPOTENCY_KEY=key) for _ in range(replays + 1)]

    if answers[0].status_code == 200:
        # The key was used by an earlier example of this run: still no new message.
        assert stored_state(mobile_user) == (before_count, before_seq)
    else:
        assert answers[0].status_code == 202
        assert stored_state(mobile_user) == (before_count + 1, before_seq + 1)
    assert [a.status_code for a in answers[1:]] == [200] * replays
    assert len({a.json()["id"] for a in answers}) == 1


# --- GET messages/{id}/ -----------------------------------------------------------------------


def test_message_detail_shows_timestamps_retry_count_failure_and_attempts(sender_client, sender):
    message = MessageFactory(sender=sender, retry_count=2)
    now = timezone.now()
    DeliveryAttempt.objects.create(
        message=message, at=now - timedelta(seconds=5), channel=Channel.WEBSOCKET, outcome=Outcome.TIMEOUT
    )
    DeliveryAttempt.objects.create(
        message=message, at=now, channel=Channel.FCM, outcome=Outcome.ERROR, error="provider down"
    )
    messages_fail(Message.objects.filter(pk=message.pk), reason="permanent: content rejected")

    response = sender_client.get(f"{URL}{message.id}/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == str(message.id)
    assert body["status"] == Status.FAILED
    assert body["retry_count"] == 2
    assert body["failure_reason"] == "permanent: content rejected"
    for stamp in ("created_at", "sent_at", "delivered_at", "read_at", "failed_at"):
        assert stamp in body
    assert body["failed_at"] is not None
    assert [(a["channel"], a["outcome"], a["error"]) for a in body["attempts"]] == [
        ("websocket", "timeout", ""),
        ("fcm", "error", "provider down"),
    ]
    assert all(a["at"] for a in body["attempts"])


def test_message_detail_of_another_senders_message_is_404_without_leaking(sender_client, other_sender):
    theirs = MessageFactory(sender=other_sender, content="secret content", subject="secret subject")

    response = sender_client.get(f"{URL}{theirs.id}/")

    assert response.status_code == 404
    text = response.content.decode()
    assert "secret" not in text
    assert theirs.recipient.phone_number not in text
    assert set(response.json()) == {"detail"}


def test_message_detail_of_unknown_or_non_uuid_id_is_json_404(sender_client):
    for message_id in (uuid.uuid4(), "not-a-uuid", "123"):
        response = sender_client.get(f"{URL}{message_id}/")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json()["detail"]


def test_message_detail_needs_a_token(anonymous_client, sender):
    message = MessageFactory(sender=sender)

    assert anonymous_client.get(f"{URL}{message.id}/").status_code == 401


# --- GET messages/ ----------------------------------------------------------------------------


def test_list_is_paginated_and_shows_only_the_callers_messages(sender_client, sender, other_sender):
    mine = [MessageFactory(sender=sender) for _ in range(3)]
    MessageFactory(sender=other_sender)

    response = sender_client.get(URL, {"page_size": 2})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    assert body["previous"] is None and body["next"]
    second = sender_client.get(body["next"]).json()
    ids = [m["id"] for m in body["results"] + second["results"]]
    assert sorted(ids) == sorted(str(m.id) for m in mine)
    assert second["next"] is None


def test_list_caps_page_size_at_500(sender_client, sender):
    recipient = MobileUserFactory()
    Message.objects.bulk_create(
        Message(sender=sender, recipient=recipient, seq=i, content="x") for i in range(1, 502)
    )

    body = sender_client.get(URL, {"page_size": 1000}).json()

    assert body["count"] == 501
    assert len(body["results"]) == 500
    assert body["next"]


def test_list_filters_by_status_recipient_kind_and_creation_time(sender_client, sender):
    alice, bob = MobileUserFactory(), MobileUserFactory()
    to_alice = MessageFactory(sender=sender, recipient=alice)
    to_bob = MessageFactory(sender=sender, recipient=bob)
    messages_fail(Message.objects.filter(pk=to_bob.pk), reason="gone")
    old = MessageFactory(sender=sender, recipient=bob)
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))

    def ids(**params) -> set[str]:
        response = sender_client.get(URL, params)
        assert response.status_code == 200, response.content
        return {m["id"] for m in response.json()["results"]}

    assert ids(status="failed") == {str(to_bob.id)}
    assert ids(status="queued") == {str(to_alice.id), str(old.id)}
    assert ids(recipient=alice.phone_number) == {str(to_alice.id)}
    # The filter normalises the phone number like a send does.
    spaced = f"{alice.phone_number[:2]} {alice.phone_number[2:5]} {alice.phone_number[5:]}"
    assert ids(recipient=spaced) == {str(to_alice.id)}
    assert ids(kind="one_way") == {str(to_alice.id), str(to_bob.id), str(old.id)}
    assert ids(kind="chat") == set()
    day_ago = (timezone.now() - timedelta(days=1)).isoformat()
    assert ids(created_after=day_ago) == {str(to_alice.id), str(to_bob.id)}
    assert ids(created_before=day_ago) == {str(old.id)}


@pytest.mark.parametrize(
    "params",
    [
        {"recipient": "4155550100"},
        {"created_after": "yesterday"},
        {"created_before": "2024-13-45"},
        {"status": "lost"},
        {"kind": "broadcast"},
    ],
    ids=["malformed_phone", "bad_after", "bad_before", "bad_status", "bad_kind"],
)
def test_list_with_invalid_filter_is_400(sender_client, params):
    response = sender_client.get(URL, params)

    assert response.status_code == 400
    body = response.json()
    assert body["detail"]
    assert set(params) <= set(body)


def test_list_needs_a_sender(anonymous_client, mobile_client):
    assert anonymous_client.get(URL).status_code == 401
    assert mobile_client.get(URL).status_code == 403


# --- Correlation id ---------------------------------------------------------------------------


def test_send_echoes_the_callers_correlation_id_and_stores_it(sender_client, mobile_user):
    response = send(sender_client, _valid_body(mobile_user.phone_number), HTTP_X_CORRELATION_ID="req-123.abc")

    assert response["X-Correlation-ID"] == "req-123.abc"
    assert response.json()["correlation_id"] == "req-123.abc"
    assert Message.objects.get().correlation_id == "req-123.abc"


@pytest.mark.parametrize(
    "incoming", [None, "bad id with spaces", "x" * 65], ids=["absent", "invalid", "too_long"]
)
def test_send_without_a_usable_correlation_id_gets_a_generated_one(sender_client, mobile_user, incoming):
    headers = {} if incoming is None else {"HTTP_X_CORRELATION_ID": incoming}

    response = send(sender_client, _valid_body(mobile_user.phone_number), **headers)

    generated = response["X-Correlation-ID"]
    assert generated and generated != incoming
    assert Message.objects.get().correlation_id == generated


def test_each_request_gets_its_own_generated_correlation_id(anonymous_client):
    first = anonymous_client.get("/health/live")["X-Correlation-ID"]
    second = anonymous_client.get("/health/live")["X-Correlation-ID"]

    assert first and second and first != second
