"""Signatures verify with the endpoint's secret: by hand with hmac, and with the reference library."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from apps.messaging import lifecycle
from apps.messaging.models import Message, Status
from apps.webhooks import delivery
from apps.webhooks.signing import secret_new, signature

from ..factories import MessageFactory


def test_secret_is_whsec_and_base64_of_at_least_24_random_bytes():
    secret = secret_new()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
    assert secret_new() != secret


def test_signature_is_hmac_sha256_of_id_timestamp_and_body():
    secret = secret_new()
    body = b'{"id":"x","type":"message.sent"}'
    expected = hmac.new(
        base64.b64decode(secret.removeprefix("whsec_")), b"evt-1.1700000000." + body, hashlib.sha256
    ).digest()
    assert signature(secret=secret, webhook_id="evt-1", timestamp=1700000000, body=body) == (
        "v1," + base64.b64encode(expected).decode()
    )


@pytest.mark.django_db(transaction=True)
def test_delivered_request_verifies_with_standard_webhooks_and_fails_with_another_secret(
    sender, mobile_user, endpoint, receiver
):
    message = MessageFactory(sender=sender, recipient=mobile_user)
    lifecycle.transition(Message.objects.filter(pk=message.pk), to=Status.SENT)
    delivery.lane_run(endpoint_id=endpoint.pk)
    [request] = receiver.requests
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60

    payload = Webhook(endpoint.secret).verify(request.body, request.headers)
    assert payload["data"]["message_id"] == str(message.pk)

    # Independently of both: the header is v1,base64(HMAC(key, id.timestamp.body)).
    key = base64.b64decode(endpoint.secret.removeprefix("whsec_"))
    signed = (
        f"{request.headers['webhook-id']}.{request.headers['webhook-timestamp']}.".encode() + request.body
    )
    version, mac = request.headers["webhook-signature"].split(",", 1)
    assert version == "v1"
    assert hmac.compare_digest(base64.b64decode(mac), hmac.new(key, signed, hashlib.sha256).digest())

    with pytest.raises(WebhookVerificationError):
        Webhook(secret_new()).verify(request.body, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(endpoint.secret).verify(request.body.replace(b"sent", b"read"), request.headers)
