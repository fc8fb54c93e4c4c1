"""Request bodies: the bulk endpoints take more than Django's DATA_UPLOAD_MAX_MEMORY_SIZE, up to
their own limit; past either limit the answer is a clear 413 in JSON and nothing is stored."""

from __future__ import annotations

import json

import pytest

from apps.common.parsers import BulkJSONParser
from apps.messaging.models import Broadcast, Message
from tests.conftest import client_for
from tests.factories import MobileUserFactory, SenderFactory

BATCH = "/api/v1/messages/batch/"
BROADCAST = "/api/v1/messages/broadcast/"
SEND = "/api/v1/messages/"
# Django's limit, lowered so that small bodies exceed it.
SMALL = 2_000


@pytest.fixture
def small_django_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = SMALL


def _post(client, url: str, body: dict):
    raw = json.dumps(body)
    return client.post(url, raw, content_type="application/json"), len(raw.encode())


def test_a_batch_above_djangos_limit_is_accepted(sender_client, small_django_limit, redis):
    users = MobileUserFactory.create_batch(3)
    items = [{"recipient_phone_number": u.phone_number, "content": "x" * 1000} for u in users]

    response, size = _post(sender_client, BATCH, {"messages": items})

    assert size > SMALL
    assert response.status_code == 202, response.content
    assert Message.objects.count() == 3


def test_a_broadcast_above_djangos_limit_is_accepted(db, small_django_limit, redis):
    client = client_for(SenderFactory(permissions=["send_broadcast"]))
    users = MobileUserFactory.create_batch(2)

    response, size = _post(
        client, BROADCAST, {"recipient_phone_numbers": [u.phone_number for u in users], "content": "y" * 3000}
    )

    assert size > SMALL
    assert response.status_code == 202, response.content
    assert Broadcast.objects.count() == 1


def test_a_single_send_above_djangos_limit_is_a_clear_413(sender_client, mobile_user, small_django_limit):
    response, _ = _post(
        sender_client, SEND, {"recipient_phone_number": mobile_user.phone_number, "content": "z" * 3000}
    )

    assert response.status_code == 413
    assert response.json() == {"detail": f"The request body is larger than {SMALL:,} bytes."}
    assert not Message.objects.exists()


def test_a_batch_above_its_own_limit_is_a_clear_413(sender_client, mobile_user, monkeypatch, redis):
    monkeypatch.setattr(BulkJSONParser, "limit", 5_000)
    items = [{"recipient_phone_number": mobile_user.phone_number, "content": "x" * 1000} for _ in range(6)]

    response, size = _post(sender_client, BATCH, {"messages": items})

    assert size > 5_000
    assert response.status_code == 413
    assert "larger than 5,000 bytes" in response.json()["detail"]
    assert not Message.objects.exists()


def test_a_body_over_the_limit_is_refused_before_it_is_parsed(sender_client, monkeypatch):
    monkeypatch.setattr(BulkJSONParser, "limit", 10)

    # Not even JSON: parsed, it would be a 400.
    response = sender_client.post(BATCH, "not json at all", content_type="application/json")

    assert response.status_code == 413
    assert not Message.objects.exists()


def test_the_bulk_parser_still_refuses_what_is_not_json(sender_client):
    response = sender_client.post(BATCH, "{not json", content_type="application/json")

    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]
