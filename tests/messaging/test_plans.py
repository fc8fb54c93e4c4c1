"""The hot statements' plans: their work is bounded by the rows they name, not by the table.

A transition names a tick's acks or a chunk's messages by id. With guessed statistics (a fresh
table, as after a deploy or in the bench) the planner once started the receipts' statement from
the partial index of undelivered messages instead, and probed the ids once per undelivered row:
224 acks took 1.1 s against 5,500 undelivered messages. These tests build that situation (many
undelivered rows, no ANALYZE) and read the executed plan's row counts.
"""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from apps.accounts.party import Party
from apps.messaging import lifecycle
from apps.messaging.models import Channel, DeliveryAttempt, Message, Outcome, Status
from apps.messaging.services import receipts

pytestmark = pytest.mark.skipif("connection.vendor != 'postgresql'")

UNDELIVERED = 6000
NAMED = 200


@pytest.fixture
def undelivered(sender, mobile_user) -> list[uuid.UUID]:
    """UNDELIVERED sent messages of one recipient, each with its open attempt; never analyzed."""
    now = timezone.now()
    messages = [
        Message(
            sender=sender,
            recipient=mobile_user,
            seq=seq,
            content="hello",
            status=Status.SENT,
            sent_at=now,
            next_attempt_at=now,
        )
        for seq in range(1, UNDELIVERED + 1)
    ]
    Message.objects.bulk_create(messages, batch_size=2000)
    DeliveryAttempt.objects.bulk_create(
        [
            DeliveryAttempt(message=m, at=now, channel=Channel.WEBSOCKET, outcome=Outcome.SENT)
            for m in messages
        ],
        batch_size=2000,
    )
    return [m.pk for m in messages]


def _plan_rows(sql: str, params) -> list[tuple[str, int]]:
    """Run EXPLAIN ANALYZE of `sql`, then undo it; return (node, rows times loops) for each plan node."""
    with connection.cursor() as cursor:
        cursor.execute("SAVEPOINT plan_probe")
        cursor.execute(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {sql}", params)
        (plan,) = cursor.fetchone()
        cursor.execute("ROLLBACK TO SAVEPOINT plan_probe")
    plan = json.loads(plan) if isinstance(plan, str) else plan
    found = []

    def walk(node: dict) -> None:
        label = f"{node['Node Type']} {node.get('Index Name') or node.get('Relation Name') or ''}".strip()
        found.append((label, node["Actual Rows"] * node["Actual Loops"]))
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def _transition_plan(run) -> list[tuple[str, int]]:
    """Run `run()`; return the plan of the one transition statement it made, as run on the same rows."""
    seen = []

    def capture(execute, sql, params, many, context):
        if sql.startswith("WITH claim"):
            seen.append(_plan_rows(sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        run()
    assert len(seen) == 1, "expected one transition statement"
    return seen[0]


def _assert_bounded(plan: list[tuple[str, int]], named: int) -> None:
    busiest = max(plan, key=lambda node: node[1])
    # Each named row may be met a few times (the lock, the update, its attempt, dead versions).
    assert busiest[1] <= 5 * named, f"{busiest[0]} handled {busiest[1]} rows for {named} named ids: {plan}"
    assert not any("message_undelivered_idx" in label for label, _ in plan), plan


def test_a_tick_of_acks_touches_the_acked_rows_not_every_undelivered_one(undelivered, mobile_user):
    acked = undelivered[:NAMED]
    receipt = receipts.Receipt(Party.of(mobile_user), Status.DELIVERED, [str(pk) for pk in acked])

    plan = _transition_plan(lambda: receipts.receipts_apply([receipt]))

    _assert_bounded(plan, NAMED)
    assert Message.objects.filter(pk__in=acked, status=Status.DELIVERED).count() == NAMED
    assert Message.objects.filter(status=Status.SENT).count() == UNDELIVERED - NAMED
    assert DeliveryAttempt.objects.filter(message_id__in=acked, outcome=Outcome.ACKED).count() == NAMED
    assert DeliveryAttempt.objects.filter(outcome=Outcome.SENT).count() == UNDELIVERED - NAMED


def test_a_chunk_transition_by_ids_touches_its_rows_only(undelivered):
    chunk = undelivered[-NAMED:]

    plan = _transition_plan(
        lambda: lifecycle.transition(
            Message.objects.filter(pk__in=chunk), to=Status.PENDING, next_attempt_at=None
        )
    )

    _assert_bounded(plan, NAMED)
    assert Message.objects.filter(status=Status.PENDING).count() == NAMED
