"""End to end through real daphne, Celery worker and beat: what a sender and a mobile app see.

One set of processes serves the whole module (tests/e2e/conftest.py); each test makes its own
sender and mobile user, and the tables are truncated after it.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import connection

pytestmark = pytest.mark.e2e

IDLE_SECONDS = 7
SENDS = 30


def test_online_client_receives_message_then_ack_and_read_are_recorded(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    socket = e2e.connect(mobile, acking=False)

    accepted = e2e.send(sender, mobile, "Your parcel is on its way", subject="Parcel")
    assert (accepted["status"], accepted["seq"]) == ("queued", 1)

    [frame] = socket.wait_for(lambda s: s.messages(), timeout=15, what="the message frame")
    assert frame["id"] == accepted["id"]
    assert frame["seq"] == 1
    assert (frame["kind"], frame["conversation_id"]) == ("one_way", None)
    assert (frame["subject"], frame["content"], frame["content_type"]) == (
        "Parcel",
        "Your parcel is on its way",
        "text",
    )
    assert frame["sender"] == {"type": "business", "id": sender.user.pk, "name": sender.user.username}

    [sent] = e2e.wait_status(sender, [accepted["id"]], "sent")
    assert sent["sent_at"] is not None
    assert sent["delivered_at"] is None

    socket.ack([accepted["id"]])
    [delivered] = e2e.wait_status(sender, [accepted["id"]], "delivered")
    assert delivered["delivered_at"] is not None
    assert delivered["read_at"] is None
    assert delivered["retry_count"] == 0
    # Written once to a connected client: no offline detour, no retry.
    assert [(a["channel"], a["outcome"]) for a in delivered["attempts"]] == [("websocket", "acked")]

    socket.read([accepted["id"]])
    [read] = e2e.wait_status(sender, [accepted["id"]], "read")
    assert read["read_at"] is not None
    assert read["delivered_at"] == delivered["delivered_at"]
    assert [m["id"] for m in socket.messages()] == [accepted["id"]]


def test_reconnect_receives_pending_in_seq_order_before_anything_newer(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    offline_ids = [e2e.send(sender, mobile, f"while you were away #{n}")["id"] for n in range(1, 6)]

    pending = e2e.wait_status(sender, offline_ids, "pending")
    assert [m["seq"] for m in pending] == [1, 2, 3, 4, 5]
    assert all([a["outcome"] for a in m["attempts"]] == ["offline"] for m in pending)
    assert all(m["sent_at"] is None for m in pending)

    # Send a newer message while the catch-up may still be running on the server.
    socket = e2e.connect(mobile, ready=False)
    newer_id = e2e.send(sender, mobile, "newer")["id"]

    socket.wait_for(lambda s: newer_id in s.message_ids(), timeout=20, what="the newer message")
    e2e.wait_status(sender, [*offline_ids, newer_id], "delivered")
    socket.wait_ready()  # a late duplicate of the backlog would have arrived before this pong
    received = socket.messages()
    # The backlog comes first, in seq order, each message once (the catch-up claims them, so no
    # sweep writes them again). The newer one follows; the wire may repeat it (at-least-once).
    assert [(m["id"], m["seq"]) for m in received[:5]] == list(zip(offline_ids, [1, 2, 3, 4, 5], strict=True))
    assert {(m["id"], m["seq"]) for m in received[5:]} == {(newer_id, 6)}


def test_unacked_message_is_retried_dead_lettered_and_delivered_after_requeue(e2e):
    # dead-letters/ shows an operator the dead letters of the messages it sent.
    operator = e2e.sender(permissions=("manage_dead_letters",))
    mobile = e2e.mobile()
    socket = e2e.connect(mobile, acking=False)
    message_id = e2e.send(operator, mobile, "ack me if you can")["id"]

    [failed] = e2e.wait_status(operator, [message_id], "failed", timeout=40)
    assert failed["retry_count"] == 2  # MESSAGING_MAX_RETRIES of the stack
    assert failed["failure_reason"].startswith("no ack")
    assert failed["failed_at"] is not None
    assert failed["delivered_at"] is None
    outcomes = [a["outcome"] for a in failed["attempts"]]
    assert len(outcomes) >= 3, outcomes  # the first try and two retries
    assert set(outcomes) == {"timeout"}
    tries = socket.messages()
    assert len(tries) >= 3
    assert {(m["id"], m["seq"]) for m in tries} == {(message_id, 1)}

    assert e2e.sender().api.get("/api/v1/dead-letters/").status == 403
    listing = operator.api.get("/api/v1/dead-letters/")
    assert listing.status == 200, listing.body
    [letter] = listing.body["results"]
    assert (letter["message_id"], letter["status"], letter["retry_count"]) == (message_id, "failed", 2)
    assert letter["reason"].startswith("no ack")

    socket.acking = True
    seen_before_requeue = len(socket.messages())
    requeue = operator.api.post(f"/api/v1/dead-letters/{letter['id']}/requeue/")
    assert requeue.status == 202, requeue.body
    assert requeue.body == {"requeued": [message_id]}

    [delivered] = e2e.wait_status(operator, [message_id], "delivered")
    assert delivered["retry_count"] == 0
    assert (delivered["failed_at"], delivered["failure_reason"]) == (None, "")
    after_requeue = socket.messages()[seen_before_requeue:]
    assert {(m["id"], m["seq"]) for m in after_requeue} == {(message_id, 1)}
    assert operator.api.get("/api/v1/dead-letters/").body["count"] == 0


def test_idle_connection_stays_open_and_still_receives_messages(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    socket = e2e.connect(mobile)

    # Longer than one blocking receive of the channel layer (5 s in channels-redis), the
    # longest a healthy socket sits without any traffic from Redis.
    assert socket.stays_open(IDLE_SECONDS), f"the server closed an idle socket with {socket.close_code}"
    message_id = e2e.send(sender, mobile, "still there?")["id"]
    socket.wait_for(lambda s: message_id in s.message_ids(), timeout=15, what="the message frame")
    e2e.wait_status(sender, [message_id], "delivered")


@pytest.mark.parametrize("credential", ["garbage", "sender", "none"])
def test_websocket_without_a_mobile_token_is_closed_with_4401(e2e, credential):
    token = {"garbage": "not-a-real-token", "sender": e2e.sender().token, "none": None}[credential]
    socket = e2e.connect(token=token, ready=False)

    assert socket.wait_closed() == 4401
    assert socket.frames == []


def test_ticket_opens_the_mobile_websocket_once(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    issued = e2e.api.as_(mobile.token).post("/api/v1/realtime/tickets/")
    assert issued.status == 201, issued.body
    assert set(issued.body) == {"ticket", "expires_at"}
    url = f"{e2e.stack.ws_url}?ticket={issued.body['ticket']}"

    socket = e2e.connect(url=url, token=None)
    message_id = e2e.send(sender, mobile, "hello browser")["id"]
    socket.wait_for(lambda s: message_id in s.message_ids(), timeout=15, what="the message frame")
    e2e.wait_status(sender, [message_id], "delivered")

    replay = e2e.connect(url=url, token=None, ready=False)
    assert replay.wait_closed() == 4401
    assert replay.frames == []


def _sessions_opened(database: str) -> int:
    """Return how many sessions PostgreSQL has seen open on `database` (pg_stat_database)."""
    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        return conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", [database]
        ).fetchone()[0]


def test_processes_reuse_their_pooled_database_connections_across_requests_and_tasks(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    socket = e2e.connect(mobile)
    database = connection.settings_dict["NAME"]
    e2e.wait_status(sender, [e2e.send(sender, mobile, "warm-up")["id"]], "delivered")
    before = _sessions_opened(database)

    ids = []
    for n in range(SENDS):
        ids.append(e2e.send(sender, mobile, f"one of many {n}")["id"])
        socket.wait_for(lambda s, pk=ids[-1]: pk in s.message_ids(), timeout=15, what=f"message {n}")
    e2e.wait_status(sender, ids, "delivered")

    # Each send is a request, a delivery task and an ack, each of which opened a connection of
    # its own when Celery closed the worker's pool around every task.
    assert _sessions_opened(database) - before < SENDS // 4
