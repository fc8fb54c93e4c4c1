"""A message's whole history in time order, for the admin's message page (and anyone reading it).

The history lives in several places: the message's own timestamps, its delivery attempts
(WebSocket writes and pushes: devices records each push as a DeliveryAttempt with channel fcm
or apns), its dead letter and the operators' admin actions. Each place is a *source*: a function
that yields `TimelineEvent`s for one message. Apps above messaging add theirs (webhook
deliveries, ...) with `timeline_source_register` from their `AppConfig.ready()`, so messaging
never imports them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType

from .models import Channel, DeadLetter, Message, Outcome


@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    what: str  # a short label: created, delivery attempt, push, delivered, ...
    detail: str = ""
    # Orders events of the same instant: the message's creation first, its outcome last.
    rank: int = 50


TimelineSource = Callable[[Message], Iterable[TimelineEvent]]

_PUSH_CHANNELS = {Channel.FCM, Channel.APNS}


def message_created(message: Message) -> Iterable[TimelineEvent]:
    seq = f", seq {message.seq}" if message.seq is not None else ""
    detail = f"{message.kind}, priority {message.priority}{seq}"
    if message.broadcast_id:
        detail += f", broadcast {message.broadcast_id}"
    yield TimelineEvent(message.created_at, "created", detail, rank=0)


def message_attempts(message: Message) -> Iterable[TimelineEvent]:
    for attempt in message.attempts.order_by("at", "id"):
        push = attempt.channel in _PUSH_CHANNELS
        # A push the provider took is a wake-up call sent, not a frame waiting for its ack.
        outcome = "accepted by the provider" if push and attempt.outcome == Outcome.SENT else None
        detail = f"{attempt.channel}: {outcome or attempt.get_outcome_display()}"
        if attempt.error:
            detail += f" ({attempt.error})"
        yield TimelineEvent(attempt.at, "push" if push else "delivery attempt", detail, rank=20)


# Timestamp field -> label and rank. `send_at` and `canceled_at` belong to scheduled send and
# cancel (SPEC.md section 8) and are shown once the model has them.
_STATUS_TIMES = {
    "send_at": ("scheduled for", 10),
    "sent_at": ("sent", 30),
    "delivered_at": ("delivered", 40),
    "read_at": ("read", 45),
    "failed_at": ("failed", 60),
    "canceled_at": ("canceled", 60),
}


def message_status_times(message: Message) -> Iterable[TimelineEvent]:
    """Yield the status timestamps the message keeps (the latest of each, as stored)."""
    for field, (label, rank) in _STATUS_TIMES.items():
        at = getattr(message, field, None)
        if at is not None:
            detail = message.failure_reason if field == "failed_at" else ""
            yield TimelineEvent(at, label, detail, rank=rank)


def message_dead_letter(message: Message) -> Iterable[TimelineEvent]:
    dead_letter = DeadLetter.objects.filter(message=message).only("created_at", "reason").first()
    if dead_letter is not None:
        yield TimelineEvent(dead_letter.created_at, "dead-lettered", dead_letter.reason, rank=65)


def message_admin_actions(message: Message) -> Iterable[TimelineEvent]:
    """Yield what operators did to the message in the admin (requeues, ...)."""
    entries = LogEntry.objects.filter(
        content_type=ContentType.objects.get_for_model(Message), object_id=str(message.pk)
    ).select_related("user")
    for entry in entries.order_by("action_time", "id"):
        yield TimelineEvent(
            entry.action_time, "operator", f"{entry.user}: {entry.get_change_message()}", rank=70
        )


timeline_sources: list[TimelineSource] = [
    message_created,
    message_attempts,
    message_status_times,
    message_dead_letter,
    message_admin_actions,
]


def timeline_source_register(source: TimelineSource) -> None:
    """Add `source` to every message's timeline (idempotent; call from AppConfig.ready())."""
    if source not in timeline_sources:
        timeline_sources.append(source)


def message_timeline(message: Message) -> list[TimelineEvent]:
    """Return every event of `message` from every source, oldest first."""
    events = [event for source in timeline_sources for event in source(message)]
    return sorted(events, key=lambda e: (e.at, e.rank))
