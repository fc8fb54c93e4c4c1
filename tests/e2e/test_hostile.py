"""Hostile clients against real daphne: bad frames, size limits, floods and chat abuse on the wire.

The communicator tests (tests/realtime/test_hostile.py) cannot show what daphne does before a
frame reaches the application: here a frame past REALTIME_MAX_FRAME_BYTES (default 128 KiB)
gets a `frame_too_large` error and the socket stays open, a frame just within it is served, one
past daphne's hard cap (4 times the limit, from messaging_project.web) is dropped unread with
the connection (an application may not close with 1009, and autobahn fails by dropping), and a
client flooding pings is answered `rate_limited` and then closed with 4429, while another
connection of the same user goes on working. A barrage of every kind of bad frame, 48 MB of
oversized ones among them, is answered frame for frame while the web processes' memory stays
flat; a mobile user's chat flood meets its rate limit on the socket and over REST; typing into
a conversation is refused from the first frame after it is closed. Each prints a figure line
`HOSTILE <name>: ...` (`pytest -s`), the README's table.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from django.conf import settings

from apps.messaging.models import Message
from apps.realtime.consumers import CLOSE_FLOODING, MAX_IDS_PER_FRAME

from .conftest import start_stack

pytestmark = pytest.mark.e2e

# The mobile users' chat limit, low so that a flood meets it quickly (the default is 100/min).
MOBILE_SENDS_PER_MINUTE = 20


@pytest.fixture(scope="module")
def shared_stack(e2e_database_name, tmp_path_factory):
    """This module's stack, with the send rate limits on (settings.test turns them off)."""
    env = {
        "MESSAGING_RATE_LIMITS_ENABLED": "true",
        "MESSAGING_MOBILE_SENDS_PER_MINUTE": str(MOBILE_SENDS_PER_MINUTE),
    }
    stack = start_stack(e2e_database_name, tmp_path_factory.mktemp("stack"), env=env)
    yield stack
    stack.close()


def errors_at_least(n: int):
    """Return a `wait_for` predicate: the socket's error frames once there are `n` of them."""

    def predicate(socket):
        errors = socket.frames_of("error")
        return errors if len(errors) >= n else None

    return predicate


def figure(name: str, **values: object) -> None:
    line = " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    print(f"\nHOSTILE {name}: {line}")


def test_a_frame_past_the_limit_is_refused_and_the_socket_stays_open(e2e):
    mobile = e2e.mobile()
    bystander = e2e.connect(mobile)
    socket = e2e.connect(mobile)
    limit = settings.REALTIME_MAX_FRAME_BYTES
    assert limit == 128 * 1024  # what the stack's daphne was given (the same default)

    socket.send({"type": "ping", "pad": "x" * (limit - 100)})  # just within: served
    socket.wait_for(lambda s: len(s.frames_of("pong")) >= 2, timeout=10, what="the pong to a large ping")

    socket.send({"type": "ping", "pad": "x" * (limit + 1)})
    error = socket.wait_for(lambda s: s.frames_of("error"), timeout=10, what="an error frame")[0]
    assert error["code"] == "frame_too_large"
    socket.wait_ready()
    assert len(socket.frames_of("pong")) == 3  # the big ping never got one
    # The server and the user's other connection are unaffected.
    bystander.wait_ready()
    assert not bystander.closed
    figure("frame_past_limit", bytes=limit + 1 + 25, limit=limit, code=error["code"], connection="open")


def test_a_frame_past_daphnes_hard_cap_is_dropped_unread(e2e):
    mobile = e2e.mobile()
    bystander = e2e.connect(mobile)
    socket = e2e.connect(mobile)
    socket.send({"type": "ping", "pad": "x" * (4 * settings.REALTIME_MAX_FRAME_BYTES + 1)})
    # autobahn fails such a connection by dropping it: no close frame, so the client sees 1006.
    code = socket.wait_closed(timeout=10)
    assert code in (1009, 1006)
    assert socket.frames_of("error") == []
    bystander.wait_ready()
    assert not bystander.closed
    figure(
        "frame_past_daphne_cap",
        bytes=4 * settings.REALTIME_MAX_FRAME_BYTES + 1 + 25,
        cap=4 * settings.REALTIME_MAX_FRAME_BYTES,
        connection=f"dropped ({code})",
        other_connection="open",
    )


def test_a_ping_flood_gets_rate_limited_and_then_closed_with_4429(e2e):
    mobile = e2e.mobile()
    bystander = e2e.connect(mobile)
    socket = e2e.connect(mobile)
    burst = settings.REALTIME_FRAME_BURST
    # Far more than the burst plus what refills while the server works through them.
    flood = 4 * burst
    for _ in range(flood):
        socket.send({"type": "ping"})
    started = time.monotonic()
    assert socket.wait_closed(timeout=30) == CLOSE_FLOODING
    refusals = [f for f in socket.frames_of("error") if f["code"] == "rate_limited"]
    assert refusals and all(f["retry_after"] >= 1 for f in refusals)
    # Pongs: the burst (and what refilled meanwhile), never the whole flood.
    assert burst <= len(socket.frames_of("pong")) < flood
    bystander.wait_ready()
    assert not bystander.closed
    figure(
        "ping_flood",
        sent=flood,
        pongs=len(socket.frames_of("pong")),
        rate_limited=len(refusals),
        connection=f"closed {CLOSE_FLOODING}",
        closed_within=time.monotonic() - started,
        other_connection="open",
    )


# --- a barrage of bad frames, with the web processes' memory watched ----------------------


def _group_rss_kb(pgid: int) -> int:
    """Return the resident memory of every process in group `pgid` (the web launcher, its daphnes)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            status = (entry / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


OVERSIZED_BYTES = 480_000  # past the 128 KiB limit that answers, within daphne's 512 KiB cap
# A barrage: name -> (frames, expected error code). Each runs on a fresh connection (each has its
# own frame budget of REALTIME_FRAME_BURST, 1,000), so no answer is `rate_limited`.
BARRAGE = {
    "invalid_json": ([f'{{"type": "ping", {i}' for i in range(300)], "invalid_json"),
    "not_an_object": (["[1, 2]", "null", '"ping"', "42"] * 75, "invalid_frame"),
    "unknown_type": ([json.dumps({"type": f"evil.{i}"}) for i in range(300)], "unknown_type"),
    "binary": ([os.urandom(64) for _ in range(300)], "invalid_frame"),
    "ill_typed_fields": (
        [json.dumps({"type": "typing", "conversation_id": [1], "is_typing": "yes"})] * 150
        + [json.dumps({"type": "chat.send", "client_id": {"a": 1}})] * 150,
        "invalid_frame",
    ),
    "deep_nesting_120k": (["[" * 120_000] * 50, "invalid_json"),
    "oversized_480kb": (
        [json.dumps({"type": "ping", "pad": "x" * OVERSIZED_BYTES})] * 100,
        "frame_too_large",
    ),
}
# Growth of the web processes' resident memory over the whole barrage (about 60 MB of frames),
# allowing for allocator noise: anything kept per frame would pass it.
MAX_RSS_GROWTH_KB = 24 * 1024


def test_a_barrage_of_bad_frames_is_answered_frame_by_frame_with_memory_flat(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    message_id = e2e.send(sender, mobile, "to be acked only by a valid ack")["id"]
    # No socket of this test acks: the message must stay unacknowledged through the barrage.
    bystander = e2e.connect(mobile, acking=False)
    bystander.wait_for(lambda s: message_id in s.message_ids(), timeout=20, what="the message")
    web = e2e.stack.web.pid
    # One socket through every case first, so that what one-time allocations there are (code
    # paths, buffers) are made before the baseline.
    warmup = e2e.connect(mobile, acking=False)
    for frames, _ in BARRAGE.values():
        warmup.send_raw(frames[0])
    warmup.wait_ready(timeout=30)
    warmup.close()
    rss_before = _group_rss_kb(web)
    rows = {}
    for name, (frames, code) in BARRAGE.items():
        socket = e2e.connect(mobile, acking=False)
        started = time.monotonic()
        for frame in frames:
            socket.send_raw(frame)
        errors = socket.wait_for(
            errors_at_least(len(frames)),
            timeout=60,
            what=f"{len(frames)} error frames for {name}",
        )
        socket.wait_ready(timeout=30)  # still open and serving
        took = time.monotonic() - started
        codes = {e["code"] for e in errors}
        rows[name] = (len(frames), len(errors), codes, took)
        assert codes == {code}, (name, codes)
        assert len(errors) == len(frames), (name, len(errors))
        assert not socket.closed
        socket.close()
        figure(
            name,
            sent=len(frames),
            bytes=sum(len(f) for f in frames),
            answered=len(errors),
            code=code,
            connection="open",
            seconds=took,
            rss_kb=_group_rss_kb(web),
        )

    # 5,000 ids in one ack, one of them the client's own message: refused whole.
    socket = e2e.connect(mobile, acking=False)
    ack = {"type": "ack", "message_ids": [message_id, *range(4999)]}
    for _ in range(50):
        socket.send(ack)
    errors = socket.wait_for(errors_at_least(50), timeout=30, what="50 errors")
    socket.wait_ready()
    assert {e["code"] for e in errors} == {"invalid_frame"} and len(errors) == 50
    assert Message.objects.get(pk=message_id).delivered_at is None, "no id of a refused ack is applied"
    figure(
        "ack_5000_ids",
        sent=50,
        ids_per_frame=5000,
        limit=MAX_IDS_PER_FRAME,
        answered=len(errors),
        code="invalid_frame",
        applied=0,
        connection="open",
    )

    time.sleep(1)  # let the processes settle (freed frames, finished writes) before measuring
    rss_after = _group_rss_kb(web)
    bystander.wait_ready()
    assert not bystander.closed
    assert e2e.stack.web.alive() and "Traceback" not in e2e.stack.web.log_text()
    total_bytes = sum(sum(len(f) for f in frames) for frames, _ in BARRAGE.values())
    figure(
        "barrage_memory",
        frames=sum(r[0] for r in rows.values()) + 50,
        mb_sent=total_bytes / 1e6,
        rss_before_mb=rss_before / 1024,
        rss_after_mb=rss_after / 1024,
        growth_mb=(rss_after - rss_before) / 1024,
        bound_mb=MAX_RSS_GROWTH_KB / 1024,
    )
    assert rss_after - rss_before < MAX_RSS_GROWTH_KB, (rss_before, rss_after)
    # A valid ack still works; and once it is recorded no retry is left to write under the
    # teardown's truncation (which deadlocks against it).
    bystander.ack([message_id])
    e2e.wait_status(sender, [message_id], "delivered", timeout=20)


# --- chat abuse by a mobile user -----------------------------------------------------------


def _conversation(e2e, sender, mobile) -> str:
    response = sender.api.post("/api/v1/conversations/", {"mobile_phone_number": mobile.user.phone_number})
    assert response.status == 201, response.body
    return response.body["id"]


def test_a_mobile_chat_flood_meets_the_rate_limit_on_the_socket_and_over_rest(e2e):
    sender, mobile = e2e.sender(permissions=("chat",)), e2e.mobile()
    conversation = _conversation(e2e, sender, mobile)
    socket = e2e.connect(mobile)
    flood = 2 * MOBILE_SENDS_PER_MINUTE
    for n in range(flood):
        socket.send(
            {
                "type": "chat.send",
                "conversation_id": conversation,
                "content": f"spam {n}",
                "client_id": f"c{n}",
            }
        )
    socket.wait_for(
        lambda s: len(s.frames_of("chat.accepted")) + len(s.frames_of("error")) >= flood,
        timeout=30,
        what="an answer to every chat.send",
    )
    accepted, refused = socket.frames_of("chat.accepted"), socket.frames_of("error")
    rest = e2e.api.as_(mobile.token).post(
        f"/api/v1/conversations/{conversation}/messages/", {"content": "rest"}
    )
    stored = Message.objects.filter(conversation_id=conversation).count()
    figure(
        "mobile_chat_flood",
        sent=flood,
        accepted=len(accepted),
        rate_limited=len(refused),
        retry_after=max(e["retry_after"] for e in refused),
        rest_status=rest.status,
        rest_retry_after=rest.headers.get("Retry-After"),
        stored=stored,
        connection="open" if not socket.closed else socket.close_code,
    )
    assert len(accepted) == MOBILE_SENDS_PER_MINUTE
    assert {e["code"] for e in refused} == {"rate_limited"} and len(
        refused
    ) == flood - MOBILE_SENDS_PER_MINUTE
    assert all(1 <= e["retry_after"] <= 60 for e in refused)
    assert rest.status == 429 and 1 <= int(rest.headers["Retry-After"]) <= 60
    assert stored == MOBILE_SENDS_PER_MINUTE
    socket.wait_ready()


def test_typing_into_a_conversation_stops_with_the_first_frame_after_it_is_closed(e2e):
    sender, mobile = e2e.sender(permissions=("chat",)), e2e.mobile()
    conversation = _conversation(e2e, sender, mobile)
    desk = e2e.connect(token=sender.token, url=e2e.stack.business_ws_url)
    phone = e2e.connect(mobile)
    typing = {"type": "typing", "conversation_id": conversation, "is_typing": True}
    phone.send(typing)
    desk.wait_for(lambda s: s.frames_of("typing"), timeout=10, what="the typing frame while open")
    closed = sender.api.post(f"/api/v1/conversations/{conversation}/close/")
    assert closed.status == 200, closed.body
    closed_at = time.monotonic()
    # The first frame after the close (the other side closed it, in another process maybe).
    for is_typing in (False, True, False, True, False):
        phone.send({**typing, "is_typing": is_typing})
    errors = phone.wait_for(errors_at_least(5), timeout=10, what="5 refusals")
    refused_in = time.monotonic() - closed_at
    time.sleep(0.5)  # a relayed frame would have reached the desk by now
    relayed_after = len(desk.frames_of("typing")) - 1
    figure(
        "typing_after_close",
        sent=5,
        refused=len(errors),
        code=errors[0]["code"],
        relayed_after_close=relayed_after,
        all_refused_within=refused_in,
        connection="open" if not phone.closed else phone.close_code,
    )
    assert [e["code"] for e in errors] == ["conversation_closed"] * 5
    assert relayed_after == 0
    phone.wait_ready()
