"""Delivery attempts over the WebSocket: recorded when written, closed when settled."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from apps.common.pgcopy import copy_insert

from ..models import (
    Channel,
    DeliveryAttempt,
    Outcome,
)


def attempts_record(
    message_ids: Iterable[uuid.UUID], outcome: str, *, now: datetime, error: str = ""
) -> None:
    copy_insert(
        [
            DeliveryAttempt(message_id=pk, at=now, channel=Channel.WEBSOCKET, outcome=outcome, error=error)
            for pk in message_ids
        ]
    )


def attempts_close_open(message_ids: Iterable[uuid.UUID], outcome: str, error: str = "") -> None:
    DeliveryAttempt.objects.filter(
        message_id__in=list(message_ids), channel=Channel.WEBSOCKET, outcome=Outcome.SENT
    ).update(outcome=outcome, error=error)
