"""Reads for messaging: querysets with their joins applied."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from django.db import connection
from django.db.models import BooleanField, Count, Min, Prefetch, Q, QuerySet
from django.db.models.expressions import RawSQL

from apps.accounts.models import User
from apps.accounts.party import Party
from apps.common import clock
from apps.common.ids import parse_uuid, pg_array

from .models import Broadcast, DeadLetter, DeliveryAttempt, Message, Status

UNDELIVERED = (Status.QUEUED, Status.PENDING, Status.SENT)


def message_list_for_sender(
    *,
    sender: User,
    status: str | None = None,
    recipient_phone: str | None = None,
    kind: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Message]:
    """Return the sender's messages, newest first, filtered."""
    qs = (
        Message.objects.filter(sender=sender)
        .select_related("recipient")
        .prefetch_related("attachments")
        .order_by("-created_at", "-pk")
    )
    if status:
        qs = qs.filter(status=status)
    if recipient_phone:
        qs = qs.filter(recipient__phone_number=recipient_phone)
    if kind:
        qs = qs.filter(kind=kind)
    if created_after:
        qs = qs.filter(created_at__gte=created_after)
    if created_before:
        qs = qs.filter(created_at__lt=created_before)
    return qs


def message_get_for_sender(*, sender: User, message_id: object) -> Message | None:
    """Return the sender's message with its attempts, or None (also for another's message)."""
    pk = parse_uuid(message_id)
    if pk is None:
        return None
    return (
        Message.objects.filter(sender=sender, pk=pk)
        .select_related("recipient")
        .prefetch_related(
            Prefetch("attempts", queryset=DeliveryAttempt.objects.order_by("at", "id")), "attachments"
        )
        .first()
    )


def inbox(recipient: Party) -> Q:
    """Return the condition for the messages addressed to `recipient` (its seq stream)."""
    if recipient.is_mobile:
        return Q(recipient_id=recipient.id)
    return Q(recipient_business_id=recipient.id)


def addressed_to_claimers(claims: Mapping[uuid.UUID, Party]) -> Q:
    """Return the condition for the messages of `claims` (id -> claiming party) addressed to that party.

    The receipts of a whole event-loop tick name hundreds of recipients: on PostgreSQL the ids
    go as one array that leads (rows found by primary key), and each row's (id, recipient)
    pair is looked up in the claimers' pairs, not a condition per recipient for the ORM to
    build and compile. The SQL names the message table: filter `Message.objects` with it at the
    top level, not in a subquery (where Django would alias the table).
    """
    if connection.vendor != "postgresql":
        own = Q()
        for pk, claimer in claims.items():
            own |= inbox(claimer) & Q(pk=pk)
        return own
    ids: list[uuid.UUID] = []
    owned: dict[str, tuple[list[uuid.UUID], list[int]]] = {
        "recipient_id": ([], []),
        "recipient_business_id": ([], []),
    }
    for pk, claimer in claims.items():
        ids.append(pk)
        pks, owners = owned["recipient_id" if claimer.is_mobile else "recipient_business_id"]
        pks.append(pk)
        owners.append(claimer.id)
    # The ids lead (the rows are found by primary key); each row's recipient must then be its
    # claimer: a hashed lookup of the (id, recipient) pairs.
    table = Message._meta.db_table
    sql = [f'"{table}"."id" = ANY(%s::uuid[])']
    params: list[object] = [pg_array(ids)]
    ownership = []
    for column, (pks, owners) in owned.items():
        if pks:
            ownership.append(
                f'("{table}"."id", "{table}"."{column}") IN (SELECT * FROM unnest(%s::uuid[], %s::bigint[]))'
            )
            params += [pg_array(pks), pg_array(owners)]
    sql.append(f"({' OR '.join(ownership)})")
    return Q(RawSQL(" AND ".join(sql), params, output_field=BooleanField()))


def with_parties(messages: QuerySet[Message]) -> QuerySet[Message]:
    """Return `messages` with what a frame payload reads: both parties, attachments."""
    return messages.select_related("sender", "sender_mobile").prefetch_related("attachments")


def undelivered_for_recipient(*, recipient: Party, after_seq: int = 0) -> QuerySet[Message]:
    """Return the recipient's undelivered, unexpired messages after `after_seq`, in seq order."""
    now = clock.now()
    return with_parties(
        Message.objects.filter(inbox(recipient), status__in=UNDELIVERED, seq__gt=after_seq)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("seq")
    )


def first_undelivered_seqs(parties: set[Party]) -> dict[Party, int]:
    """Return each party's lowest undelivered seq (strict ordering: only that message may go)."""
    found: dict[Party, int] = {}
    for kind_is_mobile, column in ((True, "recipient_id"), (False, "recipient_business_id")):
        ids = [p.id for p in parties if p.is_mobile == kind_is_mobile]
        if not ids:
            continue
        rows = (
            Message.objects.filter(**{f"{column}__in": ids}, status__in=UNDELIVERED)
            .order_by()
            .values_list(column)
            .annotate(first=Min("seq"))
        )
        for owner, first in rows:
            found[Party.mobile(owner) if kind_is_mobile else Party.business(owner)] = first
    return found


def dead_letters_visible_to(*, user: User) -> QuerySet[DeadLetter]:
    """Return the dead letters `user` may manage: its own messages', or all for staff."""
    qs = DeadLetter.objects.select_related("message", "message__recipient").order_by("-created_at", "-pk")
    if not user.is_staff:
        qs = qs.filter(message__sender=user)
    return qs


def pending_recipients_due(*, limit: int) -> list[Party]:
    """Return the recipients that have `pending` messages due for another try."""
    now = clock.now()
    pairs = (
        Message.objects.filter(status=Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .order_by()
        .values_list("recipient_id", "recipient_business_id")
        .distinct()[:limit]
    )
    return [
        Party.mobile(mobile) if mobile is not None else Party.business(business) for mobile, business in pairs
    ]


def broadcast_get_for_sender(*, sender: User, broadcast_id: object) -> Broadcast | None:
    """Return the sender's broadcast with this id, or None (also for another sender's)."""
    pk = parse_uuid(broadcast_id)
    if pk is None:
        return None
    return Broadcast.objects.filter(sender=sender, pk=pk).first()


def broadcast_progress(*, broadcast: Broadcast) -> dict[str, int]:
    """Return the broadcast's message counts: expanded, queued (not yet delivered), delivered, failed."""
    by_status = dict(
        Message.objects.filter(broadcast=broadcast).order_by().values_list("status").annotate(n=Count("pk"))
    )
    return {
        "expanded": broadcast.expanded,
        "queued": sum(by_status.get(s, 0) for s in UNDELIVERED),
        "delivered": by_status.get(Status.DELIVERED, 0) + by_status.get(Status.READ, 0),
        "failed": by_status.get(Status.FAILED, 0),
    }
