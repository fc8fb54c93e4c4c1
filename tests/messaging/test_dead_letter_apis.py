"""HTTP contract of the operators' dead-letter endpoints (permission `manage_dead_letters`)."""

from __future__ import annotations

import pytest

from apps.messaging.models import DeadLetter, Message, Status
from apps.messaging.services import messages_fail
from tests.conftest import client_for
from tests.factories import MessageFactory, SenderFactory

URL = "/api/v1/dead-letters/"
pytestmark = pytest.mark.django_db


def dead_letter_for(sender, *, reason: str = "no ack after 7 attempts", **message_fields) -> DeadLetter:
    """Return the dead letter of a fresh message of `sender`, failed through the service."""
    message = MessageFactory(sender=sender, **message_fields)
    assert messages_fail(Message.objects.filter(pk=message.pk), reason=reason) == [message.pk]
    return DeadLetter.objects.get(message=message)


def status_of(dead_letter: DeadLetter) -> str:
    return Message.objects.values_list("status", flat=True).get(pk=dead_letter.message_id)


# --- who may use them -------------------------------------------------------------------------


def _all_calls(dead_letter_id: int) -> list[tuple[str, str, dict | None]]:
    return [
        ("get", URL, None),
        ("get", f"{URL}{dead_letter_id}/", None),
        ("post", f"{URL}{dead_letter_id}/requeue/", None),
        ("post", f"{URL}requeue/", {"ids": [dead_letter_id]}),
        ("delete", f"{URL}{dead_letter_id}/", None),
    ]


def test_plain_sender_gets_403_on_every_dead_letter_endpoint(sender_client, sender):
    dead_letter = dead_letter_for(sender)

    for method, url, body in _all_calls(dead_letter.pk):
        response = getattr(sender_client, method)(url, body, format="json")
        assert response.status_code == 403, (method, url)
        assert "manage_dead_letters" in response.json()["detail"]

    assert DeadLetter.objects.filter(pk=dead_letter.pk).exists()
    assert status_of(dead_letter) == Status.FAILED


def test_anonymous_and_mobile_callers_are_refused_on_every_dead_letter_endpoint(
    anonymous_client, mobile_client, operator
):
    dead_letter = dead_letter_for(operator)

    for client, expected in ((anonymous_client, 401), (mobile_client, 403)):
        for method, url, body in _all_calls(dead_letter.pk):
            response = getattr(client, method)(url, body, format="json")
            assert response.status_code == expected, (method, url)

    assert DeadLetter.objects.filter(pk=dead_letter.pk).exists()
    assert status_of(dead_letter) == Status.FAILED


# --- list and detail --------------------------------------------------------------------------


def test_operator_lists_only_dead_letters_of_their_own_messages(operator_client, operator, other_sender):
    mine = [dead_letter_for(operator) for _ in range(2)]
    dead_letter_for(other_sender)

    response = operator_client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 2
    assert {d["id"] for d in body["results"]} == {d.pk for d in mine}
    first = body["results"][0]
    assert set(first) >= {"id", "message_id", "status", "reason", "retry_count", "created_at", "payload"}
    assert first["status"] == "failed"


def test_staff_operator_sees_every_dead_letter(sender, other_sender):
    staff = SenderFactory(permissions=["manage_dead_letters"], is_staff=True)
    all_ids = {dead_letter_for(sender).pk, dead_letter_for(other_sender).pk}

    body = client_for(staff).get(URL).json()

    assert {d["id"] for d in body["results"]} == all_ids


def test_staff_without_the_permission_is_still_403(sender):
    staff = SenderFactory(is_staff=True)
    dead_letter_for(sender)

    assert client_for(staff).get(URL).status_code == 403


def test_dead_letter_detail_shows_reason_payload_and_attempts(operator_client, operator):
    dead_letter = dead_letter_for(operator, reason="permanent: recipient deleted", content="hello there")

    response = operator_client.get(f"{URL}{dead_letter.pk}/")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == dead_letter.pk
    assert body["message_id"] == str(dead_letter.message_id)
    assert body["reason"] == "permanent: recipient deleted"
    assert body["payload"]["content"] == "hello there"
    assert body["payload"]["id"] == str(dead_letter.message_id)
    assert body["attempts"] == []


@pytest.mark.parametrize("suffix", ["", "requeue/"])
def test_another_owners_or_unknown_dead_letter_is_404(operator_client, other_sender, suffix):
    theirs = dead_letter_for(other_sender, content="their secret")
    method = operator_client.post if suffix else operator_client.get

    for dead_letter_id in (theirs.pk, theirs.pk + 1000, "abc", "99999999999999999999"):
        response = method(f"{URL}{dead_letter_id}/{suffix}")
        assert response.status_code == 404, dead_letter_id
        assert "their secret" not in response.content.decode()

    assert status_of(theirs) == Status.FAILED
    assert DeadLetter.objects.filter(pk=theirs.pk).exists()


# --- requeue ----------------------------------------------------------------------------------


def test_requeue_resets_retries_queues_the_message_and_removes_the_dead_letter(operator_client, operator):
    dead_letter = dead_letter_for(operator, retry_count=6)

    response = operator_client.post(f"{URL}{dead_letter.pk}/requeue/")

    assert response.status_code == 202
    assert response.json() == {"requeued": [str(dead_letter.message_id)]}
    message = Message.objects.get(pk=dead_letter.message_id)
    assert (message.status, message.retry_count) == (Status.QUEUED, 0)
    assert (message.failed_at, message.failure_reason) == (None, "")
    assert not DeadLetter.objects.filter(pk=dead_letter.pk).exists()
    # The same dead letter cannot be requeued twice.
    assert operator_client.post(f"{URL}{dead_letter.pk}/requeue/").status_code == 404


def test_bulk_requeue_requeues_every_listed_dead_letter(operator_client, operator):
    chosen = [dead_letter_for(operator) for _ in range(3)]
    left = dead_letter_for(operator)

    response = operator_client.post(f"{URL}requeue/", {"ids": [d.pk for d in chosen]}, format="json")

    assert response.status_code == 202
    assert set(response.json()["requeued"]) == {str(d.message_id) for d in chosen}
    assert [status_of(d) for d in chosen] == [Status.QUEUED] * 3
    assert status_of(left) == Status.FAILED
    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [left.pk]


@pytest.mark.parametrize("intruder", ["foreign", "unknown"])
def test_bulk_requeue_with_any_foreign_or_unknown_id_is_404_and_requeues_nothing(
    operator_client, operator, other_sender, intruder
):
    mine = [dead_letter_for(operator) for _ in range(2)]
    theirs = dead_letter_for(other_sender)
    extra = theirs.pk if intruder == "foreign" else theirs.pk + 1000

    response = operator_client.post(f"{URL}requeue/", {"ids": [d.pk for d in mine] + [extra]}, format="json")

    assert response.status_code == 404
    assert response.json()["detail"]
    assert [status_of(d) for d in [*mine, theirs]] == [Status.FAILED] * 3
    assert DeadLetter.objects.count() == 3


@pytest.mark.parametrize(
    "body",
    [{}, {"ids": []}, {"ids": ["x"]}, {"ids": [0]}, {"ids": list(range(1, 1002))}, [1]],
    ids=["missing", "empty", "not_int", "zero", "too_many", "array_body"],
)
def test_bulk_requeue_with_invalid_ids_is_400_and_requeues_nothing(operator_client, operator, body):
    dead_letter = dead_letter_for(operator)

    response = operator_client.post(f"{URL}requeue/", body, format="json")

    assert response.status_code == 400
    assert response.json()["detail"]
    assert status_of(dead_letter) == Status.FAILED


def test_bulk_requeue_with_an_out_of_range_id_is_404_not_500(operator_client, operator):
    dead_letter = dead_letter_for(operator)

    response = operator_client.post(f"{URL}requeue/", {"ids": [dead_letter.pk, 2**63]}, format="json")

    assert response.status_code == 404, response.content
    assert status_of(dead_letter) == Status.FAILED


# --- delete -----------------------------------------------------------------------------------


def test_delete_removes_the_dead_letter_and_leaves_the_message_failed(operator_client, operator):
    dead_letter = dead_letter_for(operator, reason="expired")

    response = operator_client.delete(f"{URL}{dead_letter.pk}/")

    assert response.status_code == 204
    assert not DeadLetter.objects.filter(pk=dead_letter.pk).exists()
    message = Message.objects.get(pk=dead_letter.message_id)
    assert (message.status, message.failure_reason) == (Status.FAILED, "expired")
    assert operator_client.delete(f"{URL}{dead_letter.pk}/").status_code == 404


def test_delete_of_another_owners_dead_letter_is_404_and_keeps_it(operator_client, other_sender):
    theirs = dead_letter_for(other_sender)

    response = operator_client.delete(f"{URL}{theirs.pk}/")

    assert response.status_code == 404
    assert DeadLetter.objects.filter(pk=theirs.pk).exists()


@pytest.mark.parametrize(
    "dead_letter_id", ["%C2%B2", "-1", "1.0", "%20"], ids=["superscript_two", "negative", "decimal", "space"]
)
def test_odd_dead_letter_ids_in_the_url_are_404_not_500(operator_client, operator, dead_letter_id):
    dead_letter = dead_letter_for(operator)

    for method, suffix in (("get", ""), ("post", "requeue/"), ("delete", "")):
        response = getattr(operator_client, method)(f"{URL}{dead_letter_id}/{suffix}")
        assert response.status_code == 404, (method, suffix)
        assert response.json()["detail"]

    assert status_of(dead_letter) == Status.FAILED
