"""Fixtures of the push tests: the local FCM and APNS servers (started once per test run) and
settings pointing the real firebase-admin and aioapns clients at them."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime

import pytest

from tests.factories import MobileUserFactory

from .fake_apns import FakeApns
from .fake_fcm import FakeFcm
from .pki import APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC, Pki, make_pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("push-pki"))


@pytest.fixture(scope="session")
def fake_fcm_server(pki):
    server = FakeFcm(pki.google_public_pem).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_apns_server(pki):
    server = FakeApns(
        cert_file=pki.server_cert_file,
        key_file=pki.server_key_file,
        auth_public_pem=pki.apns_public_pem,
        team_id=APNS_TEAM_ID,
        key_id=APNS_KEY_ID,
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def service_account_file(pki, fake_fcm_server, tmp_path_factory):
    return pki.service_account_file(tmp_path_factory.mktemp("fcm"), f"{fake_fcm_server.url}/token")


@dataclass
class Providers:
    fcm: FakeFcm
    apns: FakeApns


@pytest.fixture
def providers(settings, redis, pki, fake_fcm_server, fake_apns_server, service_account_file) -> Providers:
    """Switch to the live backend, aimed at the local FCM and APNS servers (reset)."""
    settings.PUSH_BACKEND = "live"
    settings.FCM_CREDENTIALS_FILE = str(service_account_file)
    settings.FCM_ENDPOINT_URL = fake_fcm_server.url
    settings.APNS_KEY_FILE = str(pki.apns_key_file)
    settings.APNS_KEY_ID = APNS_KEY_ID
    settings.APNS_TEAM_ID = APNS_TEAM_ID
    settings.APNS_TOPIC = APNS_TOPIC
    settings.APNS_ENDPOINT = fake_apns_server.endpoint
    settings.APNS_CA_FILE = str(pki.ca_file)
    settings.PUSH_SEND_TIMEOUT_SECONDS = 5
    fake_fcm_server.reset()
    fake_apns_server.reset()
    yield Providers(fake_fcm_server, fake_apns_server)
    fake_fcm_server.reset()
    fake_apns_server.reset()


@pytest.fixture
def recipient(db):
    return MobileUserFactory(name="Ada")


@dataclass(frozen=True)
class QueuedTask:
    args: list
    eta: datetime | None


def queued_tasks(client, task: str) -> list[QueuedTask]:
    """Return the tasks named `task` waiting in the (real, Redis) broker's queues."""
    found = []
    for queue in ("high", "default", "low"):
        for raw in client.lrange(queue, 0, -1):
            envelope = json.loads(raw)
            if envelope["headers"]["task"] != task:
                continue
            args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
            eta = envelope["headers"].get("eta")
            found.append(QueuedTask(args, datetime.fromisoformat(eta) if eta else None))
    return found
