"""Shared fixtures: real PostgreSQL (pytest-django) and real Redis, personas, API clients.

Redis: unit and integration tests use database 15 of the local Redis (settings/test.py),
flushed around each test that asks for `redis`. End-to-end tests start their
own redis-server (tests/e2e/conftest.py) so they can stop and restart it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.services import token_create
from apps.common import clock
from apps.common.redis import redis_client

from .factories import ConversationFactory, MobileUserFactory, SenderFactory
from .sockets import sockets_close


@pytest.fixture(autouse=True)
def _fresh_redis_clients():
    """Drop per-process Redis clients and channel layers so each test starts clean."""
    from channels.layers import channel_layers

    redis_client.cache_clear()
    channel_layers.backends.clear()
    yield
    sockets_close()
    redis_client.cache_clear()
    channel_layers.backends.clear()


@pytest.fixture
def redis():
    """The test Redis database (REDIS_URL of the test settings), empty at the start."""
    client = redis_client()
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def host_clock_off(settings, monkeypatch, redis):
    """Return a function that puts this host's clock `seconds` off, as a skewed host's would be.

    Both the local time the shared clock corrects (MESSAGING_CLOCK_OFFSET_SECONDS, as the fault
    tests skew worker and beat) and Django's timezone.now() move: code that reads the host's
    clock rather than apps/common/clock.py sees the skew; code on the shared clock does not.
    """

    def skew(seconds: float) -> None:
        settings.MESSAGING_CLOCK_OFFSET_SECONDS = seconds
        monkeypatch.setattr(timezone, "now", lambda: datetime.now(UTC) + timedelta(seconds=seconds))
        clock.reset()

    yield skew
    clock.reset()


# --- personas -------------------------------------------------------------------------------


@pytest.fixture
def sender(db):
    return SenderFactory()


@pytest.fixture
def other_sender(db):
    return SenderFactory()


@pytest.fixture
def operator(db):
    return SenderFactory(permissions=["manage_dead_letters"])


@pytest.fixture
def mobile_user(db):
    return MobileUserFactory()


@pytest.fixture
def stranger(db):
    """A mobile user that nothing in the test is addressed to."""
    return MobileUserFactory()


@pytest.fixture
def conversation(sender, mobile_user):
    """An active conversation between `sender` and `mobile_user`."""
    return ConversationFactory(business=sender, mobile=mobile_user)


def client_for(principal) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(owner=principal)}")
    return client


@pytest.fixture
def sender_client(sender):
    return client_for(sender)


@pytest.fixture
def other_sender_client(other_sender):
    return client_for(other_sender)


@pytest.fixture
def operator_client(operator):
    return client_for(operator)


@pytest.fixture
def mobile_client(mobile_user):
    return client_for(mobile_user)


@pytest.fixture
def anonymous_client():
    return APIClient()


@pytest.fixture
def ack_timeout(settings):
    return settings.MESSAGING_ACK_TIMEOUT_SECONDS
