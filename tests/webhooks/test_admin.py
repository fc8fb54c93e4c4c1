"""Admin: endpoints with a masked secret and their failing deliveries, events by status, redelivery."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.webhooks.models import EventStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent

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


def test_admin_created_endpoint_gets_a_secret_and_its_url_is_checked(admin_client, sender, settings):
    add = reverse("admin:webhooks_webhookendpoint_add")
    form = {
        "owner": sender.pk,
        "events": '["message.sent"]',
        "description": "",
        "is_active": "on",
        # The (read-only) inline's management form.
        "deliveries-TOTAL_FORMS": "0",
        "deliveries-INITIAL_FORMS": "0",
    }
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    refused = admin_client.post(add, {**form, "url": "https://127.0.0.1/x"})
    assert refused.status_code == 200
    assert "loopback" in refused.content.decode()
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    bad_events = admin_client.post(add, {**form, "url": "http://127.0.0.1:9/x", "events": '["nope"]'})
    assert "nope" in bad_events.content.decode()
    response = admin_client.post(add, {**form, "url": "http://127.0.0.1:9/x"})
    assert response.status_code == 302, response.context["adminform"].form.errors
    [endpoint] = WebhookEndpoint.objects.all()
    assert endpoint.secret.startswith("whsec_")
