"""Failure: unacked messages released, messages failed and dead-lettered, dead letters requeued."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.db.models import Q, QuerySet

from apps.accounts.models import PartyKind, User
from apps.accounts.party import Party
from apps.audit.services import audit_record
from apps.common import clock
from apps.devices.services import push_schedule

from .. import lifecycle
from ..models import (
    DeadLetter,
    Message,
    Outcome,
    Status,
)
from ..relay import relay_notify

logger = logging.getLogger(__name__)


def messages_release_unacked(*, recipients: Iterable[Party], reason: str) -> list[uuid.UUID]:
    """Move recipients' `sent` messages back to `pending` (their connections are gone).

    The recipients are offline now, so each mobile one with a released message gets a wake-up push.
    """
    ids_of: dict[PartyKind, list[int]] = {PartyKind.MOBILE: [], PartyKind.BUSINESS: []}
    for recipient in recipients:
        ids_of[recipient.kind].append(recipient.id)
    addressed = Q()
    if ids_of[PartyKind.MOBILE]:
        addressed |= Q(recipient_id__in=ids_of[PartyKind.MOBILE])
    if ids_of[PartyKind.BUSINESS]:
        addressed |= Q(recipient_business_id__in=ids_of[PartyKind.BUSINESS])
    if not addressed:
        return []
    with transaction.atomic():
        moved = lifecycle.transition(
            Message.objects.filter(addressed, status=Status.SENT),
            to=Status.PENDING,
            reason=reason,
            next_attempt_at=None,
            close_attempts=lifecycle.CloseAttempts(Outcome.OFFLINE, reason),
        )
        ids = [m.id for m in moved]
        if ids and ids_of[PartyKind.MOBILE]:  # business users have no devices to wake
            released_to = set(
                Message.objects.filter(pk__in=ids, recipient_id__isnull=False).values_list(
                    "recipient_id", flat=True
                )
            )
            for recipient_id in released_to:
                transaction.on_commit(lambda rid=recipient_id: push_schedule(recipient_id=rid))
    return ids


def messages_fail(
    messages: QuerySet[Message], *, reason: str, attempt_outcome: str = Outcome.ERROR, **changes
) -> list[uuid.UUID]:
    """Fail the messages that may still fail and give each a dead-letter row.

    Attempts still waiting for an ack are closed with `attempt_outcome`.
    """
    with transaction.atomic():
        moved = lifecycle.transition(
            messages,
            to=Status.FAILED,
            reason=reason,
            close_attempts=lifecycle.CloseAttempts(attempt_outcome, reason),
            **changes,
        )
        ids = [m.id for m in moved]
        if not ids:
            return []
        failed = Message.objects.filter(pk__in=ids).select_related("recipient", "recipient_business")
        DeadLetter.objects.bulk_create(
            [DeadLetter(message=m, reason=reason[:500], payload=_snapshot(m)) for m in failed],
            ignore_conflicts=True,
        )
    for pk in ids:
        logger.warning("message.dead_lettered", extra={"message_id": str(pk), "reason": reason})
    return ids


def _snapshot(message: Message) -> dict:
    return {
        "id": str(message.pk),
        "kind": message.kind,
        "conversation_id": str(message.conversation_id) if message.conversation_id else None,
        "recipient_phone_number": message.recipient.phone_number if message.recipient else None,
        "recipient_business": message.recipient_business.username if message.recipient_business else None,
        "seq": message.seq,
        "subject": message.subject,
        "content": message.content,
        "content_type": message.content_type,
        "priority": message.priority,
        "ttl_seconds": message.ttl_seconds,
        "retry_count": message.retry_count,
        "created_at": message.created_at.isoformat(),
        "correlation_id": message.correlation_id,
    }


def dead_letters_requeue(
    *, dead_letters: QuerySet[DeadLetter], actor: User | None = None, via: str = ""
) -> list[uuid.UUID]:
    """Requeue the dead letters' messages: retries reset, status `queued`, the relay woken on commit.

    With an `actor` (an operator, through the API or the admin: `via`), the audit log records
    it in the same transaction (SPEC.md section 10).
    """
    now = clock.now()
    with transaction.atomic():
        message_ids = list(dead_letters.values_list("message_id", flat=True))
        requeued: list[uuid.UUID] = []
        # Group by TTL so an expired message gets a fresh expiry from now.
        by_ttl: dict[int | None, list[uuid.UUID]] = defaultdict(list)
        for pk, ttl in Message.objects.filter(pk__in=message_ids).values_list("pk", "ttl_seconds"):
            by_ttl[ttl].append(pk)
        for ttl, ids in by_ttl.items():
            moved = lifecycle.transition(
                Message.objects.filter(pk__in=ids),
                to=Status.QUEUED,
                now=now,
                reason="requeued",
                next_attempt_at=now,  # due for the relay at once
                expires_at=now + timedelta(seconds=ttl) if ttl else None,
            )
            requeued += [m.id for m in moved]
        DeadLetter.objects.filter(message_id__in=requeued).delete()
        if requeued:
            relay_notify()
            if actor is not None:
                audit_record(
                    action="dead_letter.requeue",
                    object_type="messaging.message",
                    object_id=requeued[0] if len(requeued) == 1 else "",
                    actor=actor,
                    details={"message_ids": requeued, "via": via},
                )
    return requeued


def dead_letters_delete(*, dead_letters: list[DeadLetter], actor: User | None = None, via: str = "") -> None:
    """Remove dead letters; their messages stay `failed` with their history. Audited with an `actor`."""
    if not dead_letters:
        return
    with transaction.atomic():
        if actor is not None:
            audit_record(
                action="dead_letter.delete",
                object_type="messaging.deadletter",
                object_id=dead_letters[0].pk if len(dead_letters) == 1 else "",
                actor=actor,
                details={
                    "dead_letter_ids": [d.pk for d in dead_letters],
                    "message_ids": [d.message_id for d in dead_letters],
                    "via": via,
                },
            )
        DeadLetter.objects.filter(pk__in=[d.pk for d in dead_letters]).delete()
