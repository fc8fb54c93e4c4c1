"""Liveness, readiness (with a dependency down), metrics and the OpenAPI schema."""

from __future__ import annotations

import copy
import socket
from io import StringIO

import pytest
from channels.layers import channel_layers
from django.core.management import call_command

from apps.common.redis import redis_client
from apps.messaging.models import Message
from apps.messaging.services import messages_fail
from messaging_project.celery import app as celery_app
from tests.factories import MessageFactory

pytestmark = pytest.mark.django_db


def test_live_answers_200_without_authentication(anonymous_client):
    response = anonymous_client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_answers_200_when_every_dependency_is_up(anonymous_client, redis):
    response = anonymous_client.get("/health/ready")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {
        "database": "ok",
        "redis": "ok",
        "broker": "ok",
        "channel_layer": "ok",
        "storage": "ok",
    }
    assert "Retry-After" not in response


@pytest.fixture
def redis_down(settings):
    """Point Redis, the Celery broker and the channel layer at a port nothing listens on.

    Yield a function that points them back at the test Redis (the settings fixture restores
    them after the test in any case).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    up = {
        name: copy.deepcopy(getattr(settings, name))
        for name in ("REDIS_URL", "CELERY_BROKER_URL", "CHANNEL_LAYERS")
    }
    closed = f"redis://127.0.0.1:{port}/0"
    settings.REDIS_URL = closed
    settings.CELERY_BROKER_URL = closed
    layers = copy.deepcopy(up["CHANNEL_LAYERS"])
    layers["default"]["CONFIG"]["hosts"] = [closed]
    settings.CHANNEL_LAYERS = layers
    # health.check_broker connects with celery_app.connection_for_write(), whose URL the app's
    # configuration reads through to the Django settings at each access: no copy to patch.
    # (Writing celery_app.conf would pin a value that outlives this test.)
    assert celery_app.conf.broker_write_url == closed
    redis_client.cache_clear()
    channel_layers.backends.clear()

    def back_up() -> None:
        for name, value in up.items():
            setattr(settings, name, value)
        redis_client.cache_clear()
        channel_layers.backends.clear()

    yield back_up
    back_up()


def test_ready_answers_503_naming_the_failing_checks_when_redis_is_down(anonymous_client, redis_down):
    response = anonymous_client.get("/health/ready")

    assert response.status_code == 503
    assert response["Retry-After"].isdigit()
    body = response.json()
    for failing in ("redis", "broker", "channel_layer"):
        assert failing in body["detail"]
        assert body["checks"][failing].startswith("failed:")
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["storage"] == "ok"
    assert "database" not in body["detail"]


def test_ready_recovers_once_redis_is_back(anonymous_client, redis_down):
    assert anonymous_client.get("/health/ready").status_code == 503

    redis_down()

    response = anonymous_client.get("/health/ready")
    assert response.status_code == 200, response.json()


def test_metrics_exposes_backlog_gauges_in_prometheus_text(anonymous_client):
    MessageFactory()
    MessageFactory()
    failed = MessageFactory()
    messages_fail(Message.objects.filter(pk=failed.pk), reason="expired")

    response = anonymous_client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "# TYPE messaging_backlog gauge" in text
    assert 'messaging_backlog{status="queued"} 2.0' in text
    assert 'messaging_backlog{status="pending"} 0.0' in text
    assert 'messaging_backlog{status="sent"} 0.0' in text
    assert "messaging_dead_letters 1.0" in text


def test_metrics_of_an_empty_system_are_zero_not_missing(anonymous_client):
    text = anonymous_client.get("/metrics").content.decode()

    assert 'messaging_backlog{status="queued"} 0.0' in text
    assert "messaging_dead_letters 0.0" in text


def test_openapi_schema_renders_with_every_endpoint(anonymous_client):
    response = anonymous_client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    scheme = schema["components"]["securitySchemes"]["tokenAuth"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "Authorization")
    assert {"tokenAuth": []} in schema["paths"]["/api/v1/messages/"]["post"]["security"]
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/v1/messages/"])
    for path in (
        "/api/v1/messages/{message_id}/",
        "/api/v1/dead-letters/",
        "/api/v1/dead-letters/{dead_letter_id}/",
        "/api/v1/dead-letters/{dead_letter_id}/requeue/",
        "/api/v1/dead-letters/requeue/",
        "/api/v1/realtime/tickets/",
    ):
        assert path in paths


def test_openapi_schema_generates_without_errors():
    out = StringIO()

    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out, stderr=StringIO())

    assert "openapi:" in out.getvalue()


def test_interactive_docs_render(anonymous_client):
    response = anonymous_client.get("/api/docs/")

    assert response.status_code == 200
    assert b"swagger" in response.content.lower()
