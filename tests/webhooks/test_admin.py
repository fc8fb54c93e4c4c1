"""Admin: endpoints with a masked secret and their failing deliveries, events by status, redelivery."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.webhooks.models import EventStatus, WebhookDelivery, WebhookEvent

from .conftest import endpoint_for

pytestmark = pytest.mark.django_db

EVENTS = reverse("admin:webhooks_webhookevent_changelist")


def _event(endpoint, now, status=EventStatus.GIVEN_UP, **fields):
    return WebhookEvent.objects.create(
        endpoint=endpoint,
        type="message.delivered",
        payload={"at": "x"},
        created_at=now,
        status=status,
        **fields,
    )


def test_endpoint_page_masks_the_secret_and_shows_failing_deliveries(admin_client, sender, now):
    endpoint = endpoint_for(sender, "https://hooks.example.com/x")
    failed = _event(endpoint, now, attempts=1)
    ok = _event(endpoint, now, status=EventStatus.DELIVERED, attempts=1)
    WebhookDelivery.objects.create(
        event=failed,
        endpoint=endpoint,
        attempt=1,
        outcome="gave_up",
        status_code=500,
        error="HTTP 503 boom",
        at=now,
    )
    WebhookDelivery.objects.create(
        event=ok, endpoint=endpoint, attempt=1, outcome="success", status_code=200, at=now
    )

    page = admin_client.get(reverse("admin:webhooks_webhookendpoint_change", args=[endpoint.pk]))
    listing = admin_client.get(reverse("admin:webhooks_webhookendpoint_changelist"))
    html = page.content.decode()
    assert page.status_code == listing.status_code == 200
    assert endpoint.secret not in html + listing.content.decode()
    assert endpoint.secret[:10] in html
    assert "HTTP 503 boom" in html
    assert html.count("success") == 0


def test_events_filter_by_status_and_redeliver_action(admin_client, sender, now, receiver):
    endpoint = endpoint_for(sender, receiver.url)
    given_up = _event(endpoint, now, attempts=12)
    _event(endpoint, now, status=EventStatus.DELIVERED)

    filtered = admin_client.get(EVENTS, {"status__exact": "given_up"})
    assert [e.pk for e in filtered.context["cl"].result_list] == [given_up.pk]

    response = admin_client.post(
        EVENTS, {"action": "redeliver", "_selected_action": [given_up.pk]}, follow=True
    )
    assert response.status_code == 200
    given_up.refresh_from_db()
    assert given_up.status == EventStatus.PENDING
    assert given_up.next_attempt_at is not None
