"""Priority lanes with the real worker: a high message overtakes a low batch still draining."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apps.messaging.models import Message, Status

from .harness import Stack

pytestmark = pytest.mark.e2e

LOW = 1000
CHUNK = 20  # 50 low tasks waiting on the `low` queue


@pytest.fixture
def stack(e2e_database_name, tmp_path_factory) -> Iterator[Stack]:
    stack = Stack(database_name=e2e_database_name, workdir=tmp_path_factory.mktemp("stack"))
    stack.env["MESSAGING_DELIVERY_CHUNK"] = str(CHUNK)
    # Ordering is under test, not ack timeouts: a loaded box may take longer than the harness's
    # fast 2 s to record a thousand acks, and a timed-out message would never count as delivered.
    stack.env["MESSAGING_ACK_TIMEOUT_SECONDS"] = "30"
    try:
        yield stack.start()
    finally:
        stack.close()


def test_a_high_priority_message_is_delivered_while_a_large_low_batch_is_still_draining(e2e):
    sender, busy, waiting = e2e.sender(), e2e.mobile(), e2e.mobile()
    busy_socket, urgent_socket = e2e.connect(busy), e2e.connect(waiting)
    batch = {
        "messages": [
            {"recipient_phone_number": busy.user.phone_number, "content": f"low {n}", "priority": "low"}
            for n in range(LOW)
        ]
    }
    response = sender.api.post("/api/v1/messages/batch/", batch)
    assert response.status == 202, (response.status, response.body)

    urgent = e2e.send(sender, waiting, "Your flight leaves from gate 12", priority="high")

    urgent_socket.wait_for(lambda s: urgent["id"] in s.message_ids(), timeout=20, what="the high message")
    low_delivered_before = len(busy_socket.message_ids())
    # The worker took the high task as soon as a process was free, ahead of the low backlog.
    assert low_delivered_before < LOW // 2, low_delivered_before
    busy_socket.wait_for(lambda s: len(s.message_ids()) == LOW, timeout=60, what="the whole low batch")
    assert set(busy_socket.message_ids()) == set(response.body["ids"])
    # Every ack recorded before the test ends: truncating the tables under acks still being
    # written deadlocks the teardown.
    e2e.stack.wait(
        lambda: Message.objects.filter(status=Status.DELIVERED).count() == LOW + 1,
        timeout=60,
        what="every ack to be recorded",
    )
