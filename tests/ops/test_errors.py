"""Error shape `{"detail": "...", ...field errors}` with the right status, never a 500 for input."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import exceptions

from apps.messaging.errors import IdempotencyKeyInFlight, IdempotencyKeyMismatch, RecipientNotFound
from apps.messaging.models import Message
from apps.ops.exceptions import exception_handler

pytestmark = pytest.mark.django_db


def handle(exc):
    return exception_handler(exc, {"view": None, "request": None})


# --- the handler itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "status"),
    [(RecipientNotFound(), 404), (IdempotencyKeyMismatch(), 422), (IdempotencyKeyInFlight(), 409)],
)
def test_messaging_errors_map_to_their_status_with_a_detail(exc, status):
    response = handle(exc)

    assert response.status_code == status
    assert response.data == {"detail": exc.default_detail}


def test_django_validation_error_is_a_400_with_its_messages_as_detail():
    response = handle(DjangoValidationError(["first problem.", "second problem."]))

    assert response.status_code == 400
    assert response.data == {"detail": "first problem. second problem."}


def test_field_errors_keep_their_fields_next_to_a_readable_detail():
    response = handle(exceptions.ValidationError({"content": ["content is empty."], "priority": ["bad"]}))

    assert response.status_code == 400
    assert response.data["detail"] == "Invalid input: content: content is empty."
    assert response.data["content"] == ["content is empty."]
    assert response.data["priority"] == ["bad"]


def test_nested_field_errors_name_the_first_problem():
    response = handle(exceptions.ValidationError({"ids": {0: ["A valid integer is required."]}}))

    assert response.data["detail"] == "Invalid input: ids: 0: A valid integer is required."


def test_a_list_of_errors_becomes_detail_plus_errors():
    response = handle(exceptions.ValidationError(["not allowed", "also this"]))

    assert response.status_code == 400
    assert response.data == {"detail": "not allowed", "errors": ["not allowed", "also this"]}


def test_non_field_errors_are_not_prefixed_with_their_key():
    response = handle(exceptions.ValidationError({"non_field_errors": ["Invalid data."]}))

    assert response.data["detail"] == "Invalid input: Invalid data."


def test_exceptions_outside_the_api_contract_are_left_to_django():
    assert handle(RuntimeError("boom")) is None


# --- over HTTP --------------------------------------------------------------------------------


def test_validation_error_over_http_has_detail_and_field_errors(sender_client, mobile_user):
    response = sender_client.post(
        "/api/v1/messages/",
        {"recipient_phone_number": mobile_user.phone_number, "content": "hi", "priority": "urgent"},
        format="json",
    )

    assert response.status_code == 400
    body = response.json()
    assert body["detail"].startswith("Invalid input: priority:")
    assert body["priority"] == ['"urgent" is not a valid choice.']
    assert not Message.objects.exists()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("put", "/api/v1/messages/", 405),
        ("delete", "/api/v1/messages/", 405),
        ("get", "/api/v1/dead-letters/requeue/", 405),
        ("get", "/api/v1/realtime/tickets/", 405),
        ("get", "/api/v1/messages/00000000-0000-0000-0000-000000000000/", 404),
    ],
)
def test_http_errors_are_json_with_a_detail(operator_client, method, path, status):
    response = getattr(operator_client, method)(path)

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"]


def test_unsupported_body_type_is_415_and_stores_nothing(sender_client, mobile_user):
    response = sender_client.post(
        "/api/v1/messages/",
        data=f"recipient_phone_number={mobile_user.phone_number}",
        content_type="text/plain",
    )

    assert response.status_code == 415
    assert response.json()["detail"]
    assert not Message.objects.exists()


def test_form_encoded_send_is_validated_like_json(sender_client, mobile_user):
    response = sender_client.post(
        "/api/v1/messages/", {"recipient_phone_number": mobile_user.phone_number, "content": "<i>hey</i>"}
    )

    assert response.status_code == 202
    assert Message.objects.get().content == "hey"


@pytest.mark.parametrize(
    "body",
    [
        {"recipient_phone_number": ["+14155550100"], "content": "x"},
        {"recipient_phone_number": {"a": 1}, "content": "x"},
        {"recipient_phone_number": "+14155550100", "content": {"nested": True}},
        {"recipient_phone_number": "+14155550100", "content": "x", "attachment_ids": "abc"},
        {"recipient_phone_number": "+14155550100", "content": "x", "ttl_seconds": 10**20},
        {"recipient_phone_number": "+" + "1" * 40, "content": "x"},
        {"recipient_phone_number": "+14155550100", "content": "x", "subject": None},
        "just a string",
        None,
    ],
)
def test_odd_shaped_input_is_a_clear_400_never_a_500(sender_client, mobile_user, body):
    response = sender_client.post("/api/v1/messages/", body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert not Message.objects.exists()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = [
    "recipient_phone_number",
    "subject",
    "content",
    "content_type",
    "priority",
    "ttl_seconds",
    "attachment_ids",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)),
    keep_phone=st.booleans(),
)
def test_arbitrary_json_bodies_never_cause_a_500_and_refusals_store_nothing(
    sender_client, mobile_user, fields, keep_phone
):
    body = {"recipient_phone_number": mobile_user.phone_number, **fields} if keep_phone else fields
    before = Message.objects.count()

    response = sender_client.post("/api/v1/messages/", body, format="json")

    assert response.status_code in (202, 400, 404), response.content
    assert response.json()["detail"] if response.status_code != 202 else response.json()["id"]
    assert Message.objects.count() == before + (response.status_code == 202)


def test_unknown_api_path_answers_json_404(anonymous_client, db):
    response = anonymous_client.get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["detail"].startswith("Not found")
