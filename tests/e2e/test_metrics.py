"""/metrics of the real stack: one scrape of a web process sums what every process recorded —
the web processes (sends, acks, sockets, HTTP requests) and the Celery worker (pushes)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .harness import Api

pytestmark = pytest.mark.e2e


def scrape(stack) -> dict[tuple[str, tuple], float]:
    response = Api(stack.base_url).get("/metrics")
    assert response.status == 200, response
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.body)
        for s in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_sends_acks_and_pushes_move_the_counters_of_the_processes_that_did_them(e2e):
    sender, online, offline = e2e.sender(), e2e.mobile(), e2e.mobile()
    device = Api(e2e.stack.base_url, offline.token).post(
        "/api/v1/devices/", {"token": "e2e-fcm-token-" + "x" * 40, "platform": "android"}
    )
    assert device.status == 201, device
    before = scrape(e2e.stack)

    socket = e2e.connect(online)  # acknowledges every message
    ids = [e2e.send(sender, online, f"counted {n}")["id"] for n in range(5)]
    e2e.wait_status(sender, ids, "delivered")
    pushed = e2e.send(sender, offline, "wake up")["id"]
    e2e.stack.wait(
        lambda: any(a["channel"] == "fcm" for a in e2e.message(sender, pushed)["attempts"]),
        timeout=20,
        what="the worker's push to the offline user's device",
    )
    during = scrape(e2e.stack)

    def delta(name, **labels):
        return value(during, name, **labels) - value(before, name, **labels)

    # Web: six sends accepted and answered, five acks recorded with their delivery times.
    assert delta("messaging_messages_accepted_total", kind="one_way", priority="normal") == 6
    assert delta("messaging_http_requests_total", view="messages", method="POST", status="202") == 6
    assert delta("messaging_http_request_duration_seconds_count", view="messages", status="202") == 6
    assert delta("messaging_messages_delivered_total") == 5
    assert delta("messaging_delivery_seconds_count") == 5
    assert delta("messaging_delivery_seconds_bucket", le="+Inf") == 5
    assert 0 < delta("messaging_delivery_seconds_sum") < 5 * 20
    # Worker: one push, taken by the (log) provider.
    assert delta("messaging_push_total", platform="android", outcome="sent") == 1
    # Nothing failed, and the open socket is counted while it is open.
    failed = [key for key in during if key[0] == "messaging_messages_failed_total"]
    assert sum(during[key] - before.get(key, 0.0) for key in failed) == 0
    assert delta("messaging_websocket_connections") == 1

    socket.close()
    e2e.stack.wait(
        lambda: (
            value(scrape(e2e.stack), "messaging_websocket_connections")
            == value(before, "messaging_websocket_connections")
        ),
        timeout=10,
        what="the closed socket to leave the connections gauge",
    )
