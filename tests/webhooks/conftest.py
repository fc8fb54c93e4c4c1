"""Webhook fixtures: a real local receiver, endpoints of the personas, a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apps.webhooks import client
from apps.webhooks.models import EventType, WebhookEndpoint
from apps.webhooks.signing import secret_new

from .receiver import Receiver

ALL_EVENTS = [choice.value for choice in EventType]


@pytest.fixture(autouse=True)
def _fresh_http_client():
    """Each test gets a new HTTP client (its settings, no connection kept from another test)."""
    client.client_reset()
    yield
    client.client_reset()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def endpoint_for(owner, url: str, *, events=None, **fields) -> WebhookEndpoint:
    """Store an endpoint directly (the API's URL checks are tested on their own)."""
    return WebhookEndpoint.objects.create(
        owner=owner, url=url, events=list(events or ALL_EVENTS), secret=secret_new(), **fields
    )


@pytest.fixture
def endpoint(sender, receiver):
    return endpoint_for(sender, receiver.url)
