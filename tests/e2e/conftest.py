"""End-to-end fixtures: real daphne, Celery worker and beat on the test database, a private Redis.

The processes share the test's PostgreSQL database (transactional tests commit, so they see
the users a test creates; the tables are truncated after each test) and use a redis-server of
their own. `shared_stack` serves a whole module; a module whose tests kill or stop a process
overrides `stack` with `own_stack`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from django.db import connection

from apps.accounts.models import MobileUser, User
from apps.accounts.services import mobile_user_create, sender_create, token_create
from apps.common.redis import redis_client
from messaging_project.settings.base import channel_layer_hosts

from .harness import Api, MobileSocket, Stack

_phone_numbers = itertools.count(1)
_usernames = itertools.count(1)
_MOBILE_TOKEN = object()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def e2e_database_name(django_db_setup) -> str:
    """Return the name of the test database the processes must use."""
    return connection.settings_dict["NAME"]


def start_stack(database_name: str, workdir, env: dict[str, str] | None = None) -> Stack:
    """Start a stack on `database_name`, its processes given `env` on top of the defaults."""
    stack = Stack(database_name=database_name, workdir=workdir)
    stack.env.update(env or {})
    try:
        return stack.start()
    except BaseException:
        stack.close()
        raise


@pytest.fixture(scope="module")
def shared_stack(e2e_database_name, tmp_path_factory) -> Iterator[Stack]:
    stack = start_stack(e2e_database_name, tmp_path_factory.mktemp("stack"))
    yield stack
    stack.close()


@pytest.fixture
def own_stack(e2e_database_name, tmp_path_factory) -> Iterator[Stack]:
    stack = start_stack(e2e_database_name, tmp_path_factory.mktemp("stack"))
    yield stack
    stack.close()


@pytest.fixture
def stack(shared_stack) -> Stack:
    return shared_stack


@dataclass
class Mobile:
    user: MobileUser
    token: str


@dataclass
class Sender:
    user: User
    token: str
    api: Api


@dataclass
class E2E:
    """What a test drives: the stack, API clients, users and WebSockets it opened."""

    stack: Stack
    sockets: list[MobileSocket] = field(default_factory=list)

    @property
    def api(self) -> Api:
        return Api(self.stack.base_url)

    def sender(self, *, permissions: tuple[str, ...] = ()) -> Sender:
        user = sender_create(username=f"e2e-sender-{next(_usernames)}", permissions=permissions)
        token = token_create(owner=user)
        return Sender(user, token, self.api.as_(token))

    def mobile(self) -> Mobile:
        # +1 415 555 xxxx numbers are valid for libphonenumber and reserved for fiction.
        user = mobile_user_create(phone_number=f"+1415555{next(_phone_numbers) % 10000:04d}", name="E2E")
        return Mobile(user, token_create(owner=user))

    def connect(
        self,
        mobile: Mobile | None = None,
        *,
        acking: bool = True,
        ready: bool = True,
        url: str | None = None,
        token: str | object | None = _MOBILE_TOKEN,
    ) -> MobileSocket:
        """Open /ws/mobile/ with the mobile's token in the header (or `token`, None for none).

        With `ready`, wait for the answer to a ping: the server has then finished connect().
        """
        if token is _MOBILE_TOKEN:
            token = mobile.token if mobile else None
        socket = MobileSocket(url or self.stack.ws_url, token=token, acking=acking)
        self.sockets.append(socket)
        if ready:
            socket.wait_ready()
        return socket

    def send(self, sender: Sender, mobile: Mobile, content: str, **fields) -> dict:
        """POST a one-way message; return its representation (asserting the 202)."""
        response = sender.api.post(
            "/api/v1/messages/",
            {"recipient_phone_number": mobile.user.phone_number, "content": content, **fields},
        )
        assert response.status == 202, (response.status, response.body)
        return response.body

    def message(self, sender: Sender, message_id: str) -> dict:
        response = sender.api.get(f"/api/v1/messages/{message_id}/")
        assert response.status == 200, (response.status, response.body)
        return response.body

    def wait_status(
        self, sender: Sender, message_ids: list[str], status: str, *, timeout: float = 20
    ) -> list[dict]:
        """Poll the API until every message has `status`; return their detailed representations."""
        wanted = set(message_ids)

        def all_there():
            # One list request per round; the details (with attempts) only once it looks done.
            listing = sender.api.get("/api/v1/messages/?page_size=500")
            assert listing.status == 200, (listing.status, listing.body)
            statuses = {m["id"]: m["status"] for m in listing.body["results"] if m["id"] in wanted}
            if statuses != dict.fromkeys(wanted, status):
                return None
            found = [self.message(sender, pk) for pk in message_ids]
            return found if all(m["status"] == status for m in found) else None

        return self.stack.wait(
            all_there, timeout=timeout, what=f"{len(message_ids)} message(s) to be {status}"
        )

    def close(self) -> None:
        for socket in self.sockets:
            socket.close()


@pytest.fixture
def e2e(request, stack, transactional_db, settings) -> Iterator[E2E]:
    """Point this process at the stack's Redis too, and close the test's sockets afterwards."""
    settings.REDIS_URL = stack.redis_url
    settings.CELERY_BROKER_URL = stack.redis_url
    layer = settings.CHANNEL_LAYERS["default"]
    settings.CHANNEL_LAYERS = {
        "default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": channel_layer_hosts(stack.redis_url)}}
    }
    redis_client.cache_clear()
    harness = E2E(stack)
    yield harness
    # Close the sockets before transactional_db truncates the tables under them.
    harness.close()
    redis_client.cache_clear()
    call_report = getattr(request.node, "report_call", None)
    if call_report is not None and call_report.failed:
        print(stack.diagnostics())
