"""What apps above messaging may hear about messages, inside the transaction of the change.

Messaging must not import the apps built on it (webhooks): they register a listener
here from their `AppConfig.ready()`, and the one owner of each change calls it in the same
transaction, so an outbox row a listener writes commits or rolls back with the change itself.
A listener must be cheap when it has nothing to do: it runs on every status change.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class Changed(Protocol):
    """One message a transition moved (lifecycle's row): what a listener may read of it."""

    id: uuid.UUID
    previous: str
    kind: str
    conversation_id: uuid.UUID | None
    sender_id: int | None  # the business author, None for a mobile author
    sender_mobile_id: int | None
    recipient_id: int | None  # the mobile recipient, None for a business recipient
    correlation_id: str
    created_at: float  # epoch seconds


@dataclass(frozen=True)
class StatusChange:
    """Messages that reached `status` at `at` (with `reason` when it is `failed` or `canceled`)."""

    rows: Sequence[Changed]
    status: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class ChatReceived:
    """A chat message from a mobile user, stored for the business user `business_id`."""

    message_id: uuid.UUID
    business_id: int
    conversation_id: uuid.UUID
    at: datetime


StatusListener = Callable[[StatusChange], None]
ChatListener = Callable[[ChatReceived], None]

_status_listeners: list[StatusListener] = []
_chat_listeners: list[ChatListener] = []


def on_status_change(listener: StatusListener) -> StatusListener:
    """Register `listener` for every status change (idempotent; usable as a decorator)."""
    if listener not in _status_listeners:
        _status_listeners.append(listener)
    return listener


def on_chat_received(listener: ChatListener) -> ChatListener:
    """Register `listener` for every chat message a business user receives."""
    if listener not in _chat_listeners:
        _chat_listeners.append(listener)
    return listener


def status_changed(change: StatusChange) -> None:
    for listener in _status_listeners:
        listener(change)


def chat_received(event: ChatReceived) -> None:
    for listener in _chat_listeners:
        listener(event)
