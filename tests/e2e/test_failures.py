"""End to end under failure: the worker killed mid-delivery, Redis stopped during a send.

Each test gets processes of its own (`own_stack`), since it kills or stops one of them.
"""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from websockets.exceptions import InvalidHandshake, InvalidMessage

from apps.messaging.tasks import deliver_chunk
from messaging_project.celery import app as celery_app

from .harness import Process, wait_until

pytestmark = pytest.mark.e2e

BURST = 50
_TASK_EVENT = re.compile(
    r"Task apps\.messaging\.tasks\.deliver_\w+\[([0-9a-f-]+)\] (received|succeeded|raised|retry)"
)


@pytest.fixture
def stack(own_stack):
    return own_stack


def tasks_in_flight(worker: Process) -> set[str]:
    """Return the ids of the delivery tasks the worker received (reserved) but has not finished."""
    received, finished = set(), set()
    for match in _TASK_EVENT.finditer(worker.log_text()):
        (received if match[2] == "received" else finished).add(match[1])
    return received - finished


def test_worker_killed_mid_delivery_loses_no_message(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    socket = e2e.connect(mobile)  # acknowledges every frame it gets
    stack = e2e.stack
    worker = stack.worker

    # Several posters keep the worker's queue full while it delivers.
    with ThreadPoolExecutor(max_workers=4) as posters:
        futures = [posters.submit(e2e.send, sender, mobile, f"burst #{n}") for n in range(BURST)]
        # Kill while deliveries are reaching the client and the worker holds unfinished delivery
        # tasks (its log says so a moment before the SIGKILL): those are never acknowledged.
        wait_until(
            lambda: len(socket.messages()) >= 3 and tasks_in_flight(worker),
            timeout=30,
            what="the worker to hold tasks while delivering",
            diagnostics=stack.diagnostics,
            interval=0.01,
        )
        stack.kill_worker()
        seen_at_kill = socket.message_ids()
        ids = [f.result()["id"] for f in futures]
    assert len(seen_at_kill) < BURST

    stack.start_worker()
    socket.wait_for(lambda s: s.message_ids() >= set(ids), timeout=60, what=f"all {BURST} messages")
    delivered = e2e.wait_status(sender, ids, "delivered", timeout=30)

    assert sorted(m["seq"] for m in delivered) == list(range(1, BURST + 1))
    seq_of = {m["id"]: m["seq"] for m in delivered}
    frames = socket.messages()
    # Duplicates on the wire are allowed; loss is not, and a redelivery keeps its id and seq.
    assert {m["id"] for m in frames} == set(ids)
    assert all(m["seq"] == seq_of[m["id"]] for m in frames)
    assert all(m["failed_at"] is None for m in delivered)


def _connect_when_possible(e2e, mobile):
    """Open the mobile socket, retrying like an app does while the server recovers."""

    def attempt():
        try:
            return e2e.connect(mobile, ready=True)
        except (InvalidHandshake, InvalidMessage, OSError, AssertionError):
            return None

    return wait_until(
        attempt, timeout=30, what="the mobile socket to open", diagnostics=e2e.stack.diagnostics, interval=0.5
    )


def _hold_a_retry_in_the_worker(stack) -> None:
    """Make the worker hold an unacknowledged task, as it does with every retry's countdown."""
    task_id = str(uuid.uuid4())
    with celery_app.connection_for_write(stack.redis_url) as connection:
        deliver_chunk.apply_async(
            args=[[str(uuid.uuid4())]], countdown=300, task_id=task_id, queue="default", connection=connection
        )
    stack.wait(
        lambda: task_id in tasks_in_flight(stack.worker), timeout=20, what="the worker to hold the retry"
    )


def test_redis_outage_during_send_keeps_message_and_delivers_it_after_restart(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    stack = e2e.stack
    socket = e2e.connect(mobile)
    before_id = e2e.send(sender, mobile, "before the outage")["id"]
    e2e.wait_status(sender, [before_id], "delivered")
    _hold_a_retry_in_the_worker(stack)

    stack.stop_redis()
    # daphne drops the socket once its channel-layer receive fails (1011); the app will
    # reconnect later either way.
    socket.close()
    ready = e2e.api.get("/health/ready")
    assert ready.status == 503
    assert "redis" in ready.body["detail"]

    response = sender.api.post(
        "/api/v1/messages/",
        {"recipient_phone_number": mobile.user.phone_number, "content": "during the outage"},
        timeout=10,
    )
    assert response.status == 202, response.body
    during_id = response.body["id"]
    assert e2e.message(sender, during_id)["status"] == "queued"
    assert response.body["seq"] == 2

    stack.start_redis()
    # Beat and worker reconnect by themselves; beat's relay (its wake-up was lost with Redis)
    # finds the queued message on its next look,
    # and the worker finds the recipient offline (presence was lost with Redis).
    [pending] = e2e.wait_status(sender, [during_id], "pending", timeout=60)
    assert [a["outcome"] for a in pending["attempts"]] == ["offline"]
    assert all(p.alive() for p in (stack.web, stack.worker, stack.beat))

    socket = _connect_when_possible(e2e, mobile)
    socket.wait_for(
        lambda s: during_id in s.message_ids(), timeout=20, what="the message sent during the outage"
    )
    e2e.wait_status(sender, [during_id], "delivered")

    # Live delivery works again too (worker consuming, channel layer up).
    after_id = e2e.send(sender, mobile, "after the outage")["id"]
    socket.wait_for(lambda s: after_id in s.message_ids(), timeout=30, what="a message sent after the outage")
    e2e.wait_status(sender, [after_id], "delivered")
    assert [m["seq"] for m in socket.messages()] == [2, 3]
    assert e2e.message(sender, before_id)["status"] == "delivered"
