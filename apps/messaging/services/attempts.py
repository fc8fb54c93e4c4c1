"""Delivery attempts over the WebSocket: recorded when written (lifecycle.transition closes them)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from apps.common.pgcopy import copy_insert

from ..models import (
    Channel,
    DeliveryAttempt,
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
