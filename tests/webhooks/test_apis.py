"""The webhooks API: senders only, each seeing only its own; the secret only on create and rotate."""

from __future__ import annotations

import pytest

from apps.messaging import lifecycle
from apps.messaging.models import Message, Status
from apps.webhooks import delivery
from apps.webhooks.models import EventStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent

from ..factories import MessageFactory

pytestmark = pytest.mark.django_db

FIELDS = {"id", "url", "events", "description", "is_active", "created_at"}


def _create(
    client, url="http://127.0.0.1:9999/hook", events=("message.delivered", "message.failed"), **extra
):
    return client.post(
        "/api/v1/webhooks/",
        {"url": url, "events": list(events), "description": "ops", **extra},
        format="json",
    )


def test_create_answers_201_with_the_secret_shown_once(sender_client):
    response = _create(sender_client)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == FIELDS | {"secret"}
    assert body["secret"].startswith("whsec_")
    assert body["events"] == ["message.delivered", "message.failed"]
    assert body["is_active"] is True
    stored = WebhookEndpoint.objects.get()
    assert stored.secret == body["secret"]

    detail = sender_client.get(f"/api/v1/webhooks/{body['id']}/").json()
    listing = sender_client.get("/api/v1/webhooks/").json()
    assert set(detail) == FIELDS
    assert listing["count"] == 1
    assert set(listing["results"][0]) == FIELDS
    assert set(listing) == {"count", "next", "previous", "results"}
    assert body["secret"] not in str(detail) + str(listing)


def test_rotate_secret_shows_the_new_one_and_signs_with_it(sender_client):
    created = _create(sender_client).json()
    rotated = sender_client.post(f"/api/v1/webhooks/{created['id']}/rotate-secret/")
    assert rotated.status_code == 200
    assert rotated.json()["secret"] != created["secret"]
    assert WebhookEndpoint.objects.get().secret == rotated.json()["secret"]


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://127.0.0.1:9/x", "events": ["message.exploded"]},
        {"url": "http://127.0.0.1:9/x", "events": []},
        {"url": "http://127.0.0.1:9/x"},
        {"url": "http://127.0.0.1:9/x", "events": "message.sent"},
        {"events": ["message.sent"]},
        {"url": "http://127.0.0.1:9/" + "x" * 2100, "events": ["message.sent"]},
        {"url": "http://127.0.0.1:9/x", "events": ["message.sent"], "description": "d" * 501},
    ],
)
def test_invalid_input_is_400(sender_client, body):
    response = sender_client.post("/api/v1/webhooks/", body, format="json")
    assert response.status_code == 400
    assert "detail" in response.json()
    assert not WebhookEndpoint.objects.exists()


def test_unknown_event_name_is_named_in_the_error(sender_client):
    response = _create(sender_client, events=["message.sent", "message.exploded"])
    assert response.status_code == 400
    assert "message.exploded" in str(response.json())


def test_patch_changes_fields_and_reactivation_clears_the_failure_history(sender_client, now):
    created = _create(sender_client).json()
    WebhookEndpoint.objects.update(is_active=False, failing_since=now, deactivated_at=now, paused_until=now)
    response = sender_client.patch(
        f"/api/v1/webhooks/{created['id']}/",
        {"events": ["chat.message_received"], "description": "new", "is_active": True},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["events"] == ["chat.message_received"]
    stored = WebhookEndpoint.objects.get()
    assert (stored.is_active, stored.failing_since, stored.deactivated_at, stored.paused_until) == (
        True,
        None,
        None,
        None,
    )
    bad = sender_client.patch(f"/api/v1/webhooks/{created['id']}/", {"events": ["nope"]}, format="json")
    assert bad.status_code == 400


def test_delete_removes_it(sender_client):
    created = _create(sender_client).json()
    assert sender_client.delete(f"/api/v1/webhooks/{created['id']}/").status_code == 204
    assert not WebhookEndpoint.objects.exists()
    assert sender_client.get(f"/api/v1/webhooks/{created['id']}/").status_code == 404


def test_another_senders_endpoint_is_404_everywhere(sender_client, other_sender_client):
    endpoint_id = _create(sender_client).json()["id"]
    base = f"/api/v1/webhooks/{endpoint_id}/"
    assert other_sender_client.get(base).status_code == 404
    assert other_sender_client.patch(base, {"description": "mine"}, format="json").status_code == 404
    assert other_sender_client.delete(base).status_code == 404
    assert other_sender_client.post(base + "rotate-secret/").status_code == 404
    assert other_sender_client.get(base + "deliveries/").status_code == 404
    assert other_sender_client.post(base + "deliveries/1/redeliver/").status_code == 404
    assert other_sender_client.get("/api/v1/webhooks/").json()["count"] == 0
    assert WebhookEndpoint.objects.get().description == "ops"


def test_mobile_users_get_403_and_strangers_401(mobile_client, anonymous_client):
    assert mobile_client.get("/api/v1/webhooks/").status_code == 403
    assert _create(mobile_client).status_code == 403
    assert anonymous_client.get("/api/v1/webhooks/").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_deliveries_list_attempts_and_redeliver_sends_again_with_the_same_id(
    sender, sender_client, mobile_user, receiver, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    receiver.script = lambda n, request: 500 if n == 0 else 200
    endpoint_id = _create(sender_client, url=receiver.url, events=["message.sent"]).json()["id"]
    message = MessageFactory(sender=sender, recipient=mobile_user)
    lifecycle.transition(Message.objects.filter(pk=message.pk), to=Status.SENT)
    delivery.lane_run(endpoint_id=endpoint_id)
    assert WebhookEvent.objects.get().status == EventStatus.GIVEN_UP

    listing = sender_client.get(f"/api/v1/webhooks/{endpoint_id}/deliveries/").json()
    [attempt] = listing["results"]
    event = WebhookEvent.objects.get()
    assert attempt["event_id"] == str(event.event_id)
    assert (attempt["type"], attempt["attempt"], attempt["status_code"], attempt["outcome"]) == (
        "message.sent",
        1,
        500,
        "gave_up",
    )
    assert attempt["error"] == "HTTP 500"
    assert attempt["next_attempt_at"] is None
    assert {"at", "id"} <= set(attempt)

    response = sender_client.post(f"/api/v1/webhooks/{endpoint_id}/deliveries/{attempt['id']}/redeliver/")
    assert response.status_code == 202
    assert response.json() == {"event_id": str(event.event_id), "status": "pending"}
    delivery.lane_run(endpoint_id=endpoint_id)
    assert [r.webhook_id for r in receiver.requests] == [str(event.event_id)] * 2
    assert WebhookEvent.objects.get().status == EventStatus.DELIVERED
    assert WebhookDelivery.objects.count() == 2
    assert (
        sender_client.post(f"/api/v1/webhooks/{endpoint_id}/deliveries/999999/redeliver/").status_code == 404
    )


@pytest.mark.django_db(transaction=True)
def test_another_senders_delivery_is_404_even_through_ones_own_endpoint(
    sender, sender_client, other_sender_client, mobile_user, receiver, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 1
    receiver.script = lambda n, request: 500
    theirs = _create(sender_client, url=receiver.url, events=["message.sent"]).json()["id"]
    mine = _create(other_sender_client, url=receiver.url, events=["message.sent"]).json()["id"]
    message = MessageFactory(sender=sender, recipient=mobile_user)
    lifecycle.transition(Message.objects.filter(pk=message.pk), to=Status.SENT)
    delivery.lane_run(endpoint_id=theirs)
    attempt = WebhookDelivery.objects.get()

    response = other_sender_client.post(f"/api/v1/webhooks/{mine}/deliveries/{attempt.pk}/redeliver/")

    assert response.status_code == 404
    assert WebhookEvent.objects.get().status == EventStatus.GIVEN_UP  # not set to go again
    assert other_sender_client.get(f"/api/v1/webhooks/{mine}/deliveries/").json()["count"] == 0


def test_redeliver_to_an_inactive_endpoint_is_409(sender, sender_client, mobile_user, receiver, now):
    endpoint_id = _create(sender_client, url=receiver.url).json()["id"]
    event = WebhookEvent.objects.create(
        endpoint_id=endpoint_id,
        type="message.delivered",
        payload={},
        created_at=now,
        status=EventStatus.GIVEN_UP,
    )
    attempt = WebhookDelivery.objects.create(
        event=event, endpoint_id=endpoint_id, attempt=1, outcome="gave_up", at=now
    )
    WebhookEndpoint.objects.update(is_active=False)
    response = sender_client.post(f"/api/v1/webhooks/{endpoint_id}/deliveries/{attempt.pk}/redeliver/")
    assert response.status_code == 409
    assert "inactive" in response.json()["detail"]
