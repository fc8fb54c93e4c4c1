"""The one owner of `Message.status`: the transition table and its compare-and-set update.

Nothing else in the code base writes `status`. A transition moves the messages of a queryset
whose current status is an allowed source of the target; the others are left alone, so a
late or duplicated step (an ack after a timeout, a sweep run twice, two workers racing) can
never move a message backwards.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import F, QuerySet, Value
from django.db.models.functions import Coalesce
from django.db.models.sql.subqueries import UpdateQuery

from apps.accounts.models import PartyKind
from apps.common import clock, metrics
from apps.common.ids import pg_array
from apps.messaging import events, hooks

from .models import Channel, DeliveryAttempt, Kind, Message, Outcome, Status

logger = logging.getLogger(__name__)

# Target status -> the statuses it may be reached from.
ALLOWED_SOURCES: dict[str, frozenset[str]] = {
    # A scheduled message that became due (it takes its seq in the same transaction), or an
    # explicit requeue of a dead letter.
    Status.QUEUED: frozenset({Status.SCHEDULED, Status.FAILED}),
    # Recipient offline, ack timed out (retry later) or its connection went stale.
    Status.PENDING: frozenset({Status.QUEUED, Status.SENT}),
    # Written to a socket; re-writing a `sent` message restarts its ack clock.
    Status.SENT: frozenset({Status.QUEUED, Status.PENDING, Status.SENT}),
    # The device's ack can overtake the worker's own bookkeeping.
    Status.DELIVERED: frozenset({Status.QUEUED, Status.PENDING, Status.SENT}),
    Status.READ: frozenset({Status.QUEUED, Status.PENDING, Status.SENT, Status.DELIVERED}),
    # (A scheduled message fails only once due: a deactivated recipient is found by delivery.)
    Status.FAILED: frozenset({Status.QUEUED, Status.PENDING, Status.SENT}),
    # A message is born scheduled (or not): nothing moves back to it.
    Status.SCHEDULED: frozenset(),
    # Withdrawn by its sender while no device can have it: never once it was written to a socket.
    Status.CANCELED: frozenset({Status.SCHEDULED, Status.QUEUED, Status.PENDING}),
}

TERMINAL = frozenset({Status.READ, Status.FAILED, Status.CANCELED})
# The statuses counted by messaging_messages_*_total (apps.common.metrics).
COUNTED = frozenset({Status.DELIVERED, Status.READ, Status.FAILED})
# The statuses a chat message's author hears about in `status` frames.
REPORTED = frozenset({Status.SENT, Status.DELIVERED, Status.READ, Status.FAILED})


class InvalidTransition(ValueError):
    pass


def can_transition(source: str, target: str) -> bool:
    """Return whether a message in `source` may move to `target`."""
    return source in ALLOWED_SOURCES.get(target, ())


@dataclass(frozen=True)
class Moved:
    id: uuid.UUID
    previous: str


@dataclass(frozen=True)
class CloseAttempts:
    """Close the moved messages' open WebSocket attempts (written, waiting for the ack) as `outcome`."""

    outcome: str
    error: str = ""


@dataclass(frozen=True)
class _Row:
    """What a transition reads of each message it moves."""

    id: uuid.UUID
    previous: str
    kind: str
    conversation_id: uuid.UUID | None
    sender_id: int | None
    sender_mobile_id: int | None
    recipient_id: int | None
    correlation_id: str
    created_at: float  # epoch seconds (the delivery-time histogram's start)

    @property
    def author(self) -> tuple[str, int]:
        if self.sender_id is not None:
            return PartyKind.BUSINESS, self.sender_id
        return PartyKind.MOBILE, self.sender_mobile_id


def _stamps(target: str, now: datetime, reason: str) -> dict:
    if target == Status.SENT:
        return {"sent_at": now}
    if target == Status.DELIVERED:
        return {"delivered_at": now, "next_attempt_at": None}
    if target == Status.READ:
        # Read implies delivered: keep an earlier delivered_at, else stamp it now.
        return {
            "read_at": now,
            "delivered_at": Coalesce("delivered_at", Value(now)),
            "next_attempt_at": None,
        }
    if target == Status.FAILED:
        return {"failed_at": now, "failure_reason": reason[:500], "next_attempt_at": None}
    if target == Status.QUEUED:
        return {"failed_at": None, "failure_reason": "", "retry_count": 0}
    if target == Status.CANCELED:
        return {"canceled_at": now, "failure_reason": reason[:500], "next_attempt_at": None}
    return {}


def transition(
    messages: QuerySet[Message] | Collection[uuid.UUID | str],
    *,
    to: str,
    reason: str = "",
    now: datetime | None = None,
    close_attempts: CloseAttempts | None = None,
    **changes,
) -> list[Moved]:
    """Move the messages of `messages` that may reach `to` there; return those that moved.

    `messages` is a queryset, or the messages' ids (then no query selects them: the statement
    locks them by primary key from the ids given). `changes` are further column updates made
    in the same statement (e.g. `next_attempt_at`); `close_attempts` settles the moved
    messages' open attempts in that statement too. Rows are locked in primary-key order, so
    concurrent bulk transitions cannot deadlock, and the update repeats the status condition,
    so it stays a compare-and-set on any database.

    Chat messages have two more consequences, kept here so that no status change can miss
    them: becoming `read` lowers their conversation's unread counter for the recipient's side
    (in the same transaction), and the author gets a `status` frame after commit.
    """
    if to not in ALLOWED_SOURCES:
        raise InvalidTransition(f"unknown status {to!r}")
    if "status" in changes:
        raise InvalidTransition("the target status is given by `to`")
    sources = ALLOWED_SOURCES[to]
    now = now or clock.now()
    values = {"status": to, **_stamps(to, now, reason), **changes}
    # No savepoint: nothing here catches a database error, so the caller's transaction (if any)
    # fails as a whole, and a receipt costs two round trips less.
    if not isinstance(messages, QuerySet):
        messages = list(messages)
        if not messages:
            return []
    with transaction.atomic(savepoint=False):
        if connection.vendor == "postgresql":
            rows = _move_in_one_statement(messages, sources, values, close_attempts)
            updated = len(rows)
        else:
            rows, updated = _move_locked_then_update(messages, sources, values, close_attempts)
        if not rows:
            return []
        chat = [row for row in rows if row.kind == Kind.CHAT]
        if chat:
            _chat_consequences(chat, to=to, now=now)
        hooks.status_changed(hooks.StatusChange(rows, status=to, at=now, reason=reason))
        if to in COUNTED:
            accepted_at = [row.created_at for row in rows] if to == Status.DELIVERED else []
            label = _reason_label(reason)
            transaction.on_commit(
                lambda: metrics.messages_moved(to=to, count=len(rows), reason=label, accepted_at=accepted_at)
            )
    if updated != len(rows):  # only possible without row locks (SQLite); the CAS still held
        logger.warning("message.transition_raced", extra={"expected": len(rows), "updated": updated})
    if logger.isEnabledFor(logging.INFO):  # skip building a record per row when nobody reads it
        for row in rows:
            # With the id of the request that sent the message, whichever task or socket moved
            # it: one id finds a message's whole history in the logs.
            logger.info(
                "message.status",
                extra={
                    "message_id": str(row.id),
                    "from": row.previous,
                    "to": to,
                    "reason": reason,
                    "correlation_id": row.correlation_id,
                },
            )
    return [Moved(row.id, row.previous) for row in rows]


_RETURNED = (
    "id",
    "kind",
    "conversation_id",
    "sender_id",
    "sender_mobile_id",
    "recipient_id",
    "correlation_id",
)


def _move_in_one_statement(
    messages: QuerySet[Message] | list[uuid.UUID | str],
    sources: frozenset[str],
    values: dict,
    close_attempts: CloseAttempts | None,
) -> list[_Row]:
    """Lock (in id order), compare and update the rows of `messages` in one statement (PostgreSQL).

    The CTE locks the candidates in primary-key order, so concurrent bulk transitions cannot
    deadlock, and reads each one's latest status once locked; the update moves those whose
    status may reach `to`, so this is a compare-and-set, and returns each row's previous
    status from the CTE. The moved messages' open attempts are closed by a second CTE of the
    same statement.

    The candidates are collected first, as an array (an init plan), and found by primary key
    from it; the status is not a condition of that scan. With `id IN (subquery) AND status =
    ANY(…)` the planner may start from the partial index of undelivered messages instead, and
    probe the subquery once per undelivered row: with a fresh table's guessed statistics it
    did (a tick's 224 acks took 1.1 s against 5,500 undelivered messages, not 2 ms). Ids given
    as such are that array already (one text parameter).
    """
    table = Message._meta.db_table
    if isinstance(messages, QuerySet):
        try:
            inner_sql, inner_params = messages.order_by().values("pk").query.sql_with_params()
        except EmptyResultSet:  # e.g. `pk__in=[]`: nothing to move, nothing to ask
            return []
        candidates, candidate_params = f"ARRAY({inner_sql})", list(inner_params)
    else:
        candidates, candidate_params = "%s::uuid[]", [pg_array(messages)]
    update = UpdateQuery(Message)
    update.add_update_values(values)
    update_sql, update_params = update.get_compiler(connection=connection).as_sql()
    # created_at as epoch seconds: a float loads in C, a timestamptz through Django's Python
    # loader (about 5 us a row, for every ack).
    returned = ", ".join(f'"{table}"."{column}"' for column in _RETURNED)
    returned += f""", date_part('epoch', "{table}"."created_at")"""
    sql = (
        f'WITH claim AS (SELECT id, status FROM "{table}" WHERE id = ANY({candidates})'
        " ORDER BY id FOR UPDATE), "
        f'moved AS ({update_sql} FROM claim WHERE "{table}"."id" = claim.id AND claim.status = ANY(%s)'
        f" RETURNING {returned}, claim.status AS previous)"
    )
    params = [*candidate_params, *update_params, sorted(sources)]
    if close_attempts is not None:
        sql += (
            f', closed AS (UPDATE "{DeliveryAttempt._meta.db_table}" AS a SET outcome = %s, error = %s'
            " WHERE a.message_id = ANY(ARRAY(SELECT id FROM moved)) AND a.channel = %s AND a.outcome = %s)"
        )
        params += [close_attempts.outcome, close_attempts.error[:500], Channel.WEBSOCKET, Outcome.SENT]
    with connection.cursor() as cursor:
        cursor.execute(f"{sql} SELECT * FROM moved", params)
        found = cursor.fetchall()
    found.sort(key=lambda r: r[0])
    return [_Row(r[0], r[8], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in found]


def _move_locked_then_update(
    messages: QuerySet[Message] | list[uuid.UUID | str],
    sources: frozenset[str],
    values: dict,
    close_attempts: CloseAttempts | None,
) -> tuple[list[_Row], int]:
    """Lock and read the rows, then update them (other databases: SQLite locks the whole file)."""
    if not isinstance(messages, QuerySet):
        messages = Message.objects.filter(pk__in=messages)
    rows = [
        _Row(*row[:-1], row[-1].timestamp())
        for row in messages.filter(status__in=sources)
        .select_for_update()
        .order_by("pk")
        .values_list(
            "pk",
            "status",
            "kind",
            "conversation_id",
            "sender_id",
            "sender_mobile_id",
            "recipient_id",
            "correlation_id",
            "created_at",
        )
    ]
    if not rows:
        return [], 0
    ids = [row.id for row in rows]
    updated = Message.objects.filter(pk__in=ids, status__in=sources).update(**values)
    if close_attempts is not None:
        DeliveryAttempt.objects.filter(
            message_id__in=ids, channel=Channel.WEBSOCKET, outcome=Outcome.SENT
        ).update(outcome=close_attempts.outcome, error=close_attempts.error[:500])
    return rows, updated


def _reason_label(reason: str) -> str:
    """Return a failure reason as a metric label: a few fixed values, never free text."""
    if not reason:
        return ""
    for prefix, label in (
        ("no ack", "ack_timeout"),
        ("expired", "expired"),
        ("recipient", "recipient_inactive"),
    ):
        if reason.startswith(prefix):
            return label
    return "other"


def _chat_consequences(rows: list[_Row], *, to: str, now: datetime) -> None:
    from apps.conversations.models import Conversation  # conversations' models import ours

    if to in (Status.READ, Status.CANCELED):
        # Every source of `read` and `canceled` counts as unread and neither is ever left, so
        # each message lowers its counter exactly once.
        for (conversation_id, to_mobile), n in Counter(
            (row.conversation_id, row.recipient_id is not None) for row in rows
        ).items():
            field = "unread_mobile" if to_mobile else "unread_business"
            Conversation.objects.filter(pk=conversation_id).update(**{field: F(field) - n})
    if to in REPORTED:
        changes = [(row.author, str(row.id)) for row in rows if row.previous != to]
        if changes:
            transaction.on_commit(lambda: events.statuses_changed(changes, status=to, at=now))


def transition_one(message_id: uuid.UUID | str, *, to: str, **kwargs) -> bool:
    """Move one message; return whether it moved."""
    return bool(transition([message_id], to=to, **kwargs))
