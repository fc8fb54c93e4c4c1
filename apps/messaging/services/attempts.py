"""Delivery attempts over the WebSocket: recorded when written (lifecycle.transition closes them)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

from apps.common.pgcopy import copy_rows

from ..models import (
    Channel,
    DeliveryAttempt,
)

_COLUMNS = ("message_id", "at", "channel", "outcome", "error")


def attempts_record(
    message_ids: Iterable[uuid.UUID], outcome: str, *, now: datetime, error: str = ""
) -> None:
    # Plain rows, no model instances: a chunk records hundreds of attempts at once. Choices go
    # by value (COPY would write an Enum by its name).
    channel, outcome = Channel.WEBSOCKET.value, str(outcome)
    copy_rows(DeliveryAttempt, _COLUMNS, [(pk, now, channel, outcome, error) for pk in message_ids])
