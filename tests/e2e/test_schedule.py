"""Scheduled send and cancel through real daphne, worker and beat (SPEC.md section 8)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

pytestmark = pytest.mark.e2e

LEAD = 3  # seconds ahead: enough to see that nothing arrives early


def test_a_scheduled_message_arrives_within_a_second_after_send_at_and_not_before(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    socket = e2e.connect(mobile)
    send_at = datetime.now(UTC) + timedelta(seconds=LEAD)

    accepted = e2e.send(sender, mobile, "at the stroke", send_at=send_at.isoformat())
    withdrawn = e2e.send(sender, mobile, "never mind", send_at=send_at.isoformat())
    assert (accepted["status"], accepted["seq"]) == ("scheduled", None)
    canceled = sender.api.post(f"/api/v1/messages/{withdrawn['id']}/cancel/")
    assert (canceled.status, canceled.body["status"]) == (200, "canceled")

    time.sleep(max(0.0, (send_at - datetime.now(UTC)).total_seconds() - 0.3))
    assert socket.messages() == []  # not before send_at
    [frame] = socket.wait_for(lambda s: s.messages(), timeout=LEAD + 5, what="the scheduled message")
    arrived = datetime.now(UTC)

    assert send_at <= arrived < send_at + timedelta(seconds=1), arrived - send_at
    assert (frame["id"], frame["seq"]) == (accepted["id"], 1)
    [delivered] = e2e.wait_status(sender, [accepted["id"]], "delivered")
    assert delivered["seq"] == 1
    time.sleep(1)
    # The canceled one never came, and took no seq (it was canceled while scheduled).
    assert socket.message_ids() == {accepted["id"]}
    assert socket.frames_of("skip") == []
    assert e2e.message(sender, withdrawn["id"])["status"] == "canceled"


def test_cancel_of_a_delivered_message_is_409_and_a_canceled_queued_one_is_a_skip(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    first = e2e.send(sender, mobile, "first")
    second = e2e.send(sender, mobile, "second")  # offline: pending
    e2e.wait_status(sender, [first["id"], second["id"]], "pending")
    assert sender.api.post(f"/api/v1/messages/{second['id']}/cancel/").status == 200

    socket = e2e.connect(mobile)
    e2e.wait_status(sender, [first["id"]], "delivered")
    refused = sender.api.post(f"/api/v1/messages/{first['id']}/cancel/")

    assert refused.status == 409
    assert "delivered" in refused.body["detail"]
    skips = socket.wait_for(lambda s: s.frames_of("skip"), timeout=5, what="the skip frame")
    assert skips == [{"type": "skip", "seq": 2}]
    assert socket.message_ids() == {first["id"]}
