"""Hostile clients against real daphne: the frame size limit and flood protection on the wire.

The communicator tests (tests/realtime/test_hostile.py) cannot show what daphne does before a
frame reaches the application: here a frame past REALTIME_MAX_FRAME_BYTES (default 128 KiB)
gets a `frame_too_large` error and the socket stays open, a frame just within it is served, one
past daphne's hard cap (4 times the limit, from messaging_project.web) is dropped unread with
the connection (an application may not close with 1009, and autobahn fails by dropping), and a
client flooding pings is answered `rate_limited` and then closed with 4429, while another
connection of the same user goes on working.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from apps.realtime.consumers import CLOSE_FLOODING

pytestmark = pytest.mark.e2e


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


def test_a_frame_past_daphnes_hard_cap_is_dropped_unread(e2e):
    mobile = e2e.mobile()
    bystander = e2e.connect(mobile)
    socket = e2e.connect(mobile)
    socket.send({"type": "ping", "pad": "x" * (4 * settings.REALTIME_MAX_FRAME_BYTES + 1)})
    # autobahn fails such a connection by dropping it: no close frame, so the client sees 1006.
    assert socket.wait_closed(timeout=10) in (1009, 1006)
    assert socket.frames_of("error") == []
    bystander.wait_ready()
    assert not bystander.closed


def test_a_ping_flood_gets_rate_limited_and_then_closed_with_4429(e2e):
    mobile = e2e.mobile()
    bystander = e2e.connect(mobile)
    socket = e2e.connect(mobile)
    burst = settings.REALTIME_FRAME_BURST
    # Far more than the burst plus what refills while the server works through them.
    flood = 4 * burst
    for _ in range(flood):
        socket.send({"type": "ping"})
    assert socket.wait_closed(timeout=30) == CLOSE_FLOODING
    refusals = [f for f in socket.frames_of("error") if f["code"] == "rate_limited"]
    assert refusals and all(f["retry_after"] >= 1 for f in refusals)
    # Pongs: the burst (and what refilled meanwhile), never the whole flood.
    assert burst <= len(socket.frames_of("pong")) < flood
    bystander.wait_ready()
    assert not bystander.closed
