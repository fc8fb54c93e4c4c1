"""Export and erasure through the real stack: two daphne processes that cache tokens for 30 s.

The export streams through the one-hop ASGI handler in pieces; an erasure closes the user's
open socket and its token gets 401 at once from either process, although both had it cached.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from apps.accounts.models import MobileUser
from apps.privacy import selectors

from .harness import Stack

TOKEN_CACHE_SECONDS = "30"


@pytest.fixture
def stack(e2e_database_name, tmp_path_factory):
    stack = Stack(database_name=e2e_database_name, workdir=tmp_path_factory.mktemp("stack"))
    stack.env["AUTH_TOKEN_CACHE_SECONDS"] = TOKEN_CACHE_SECONDS
    try:
        stack.start()
    except BaseException:
        stack.close()
        raise
    yield stack
    stack.close()


def test_export_streams_every_message_and_erasure_stops_token_and_socket_at_once(e2e):
    sender, mobile, other = e2e.sender(), e2e.mobile(), e2e.mobile()
    api = e2e.api.as_(mobile.token)
    count = selectors.EXPORT_PAGE + 7  # two pages
    response = sender.api.post(
        "/api/v1/messages/batch/",
        {
            "messages": [
                {"recipient_phone_number": mobile.user.phone_number, "content": f"m{i}"} for i in range(count)
            ]
        },
    )
    assert response.status == 202, response.body
    e2e.send(sender, other, "someone else's")

    request = urllib.request.Request(
        e2e.stack.base_url + "/api/v1/mobile/me/export/", headers={"Authorization": f"Token {mobile.token}"}
    )
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        export = json.loads(resp.read())
    assert [m["content"] for m in export["messages_received"]] == [f"m{i}" for i in range(count)]
    assert "someone else's" not in json.dumps(export)

    socket = e2e.connect(mobile)
    # Warm both processes' token caches (connections land on either process).
    for _ in range(10):
        assert api.get("/api/v1/devices/").status == 200

    started = time.monotonic()
    assert api.request("DELETE", "/api/v1/mobile/me/").status == 204
    refused = [api.get("/api/v1/devices/").status for _ in range(10)]
    code = socket.wait_closed(timeout=5)
    closed_in = time.monotonic() - started

    assert refused == [401] * 10
    assert code == 4401
    assert closed_in < 2, closed_in
    user = MobileUser.objects.get(pk=mobile.user.pk)
    assert not user.is_active and user.phone_number.startswith("erased-")
    # The other user is untouched.
    assert e2e.api.as_(other.token).get("/api/v1/devices/").status == 200
    print(f"\n[erase] socket closed with {code} in {closed_in:.2f}s; token refused by 10/10 requests at once")
