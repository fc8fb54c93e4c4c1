"""What delivery decides by: the ordering mode, the ack deadline, the due-time tolerance."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings

# A retry scheduled with a countdown may run a hair before its recorded due time.
DUE_TOLERANCE = timedelta(milliseconds=500)


def strict_ordering() -> bool:
    return settings.MESSAGING_ORDERING == "strict"


def ack_deadline(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.MESSAGING_ACK_TIMEOUT_SECONDS)
