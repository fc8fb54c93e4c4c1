"""Push backends: `log` (writes what it would send) and `live` (FCM and APNS).

A backend takes one notification and the device tokens it goes to, and answers one `Result` per
token with a verdict the services act on; it never touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from django.conf import settings


class Verdict(StrEnum):
    SENT = "sent"  # accepted by the provider
    INVALID_TOKEN = "invalid_token"  # the provider says the token is dead: deactivate it now
    TRANSIENT = "transient"  # try again later (honouring retry_after)
    REJECTED = "rejected"  # this notification was refused (e.g. too large); the token is fine
    CONFIGURATION = "configuration"  # our credentials or setup are wrong; tokens untouched


@dataclass(frozen=True)
class Notification:
    title: str
    body: str
    data: dict[str, str]
    high_priority: bool = False
    collapse_key: str = ""


@dataclass(frozen=True)
class Target:
    device_id: int
    token: str
    platform: str


@dataclass(frozen=True)
class Result:
    device_id: int
    verdict: Verdict
    error: str = ""
    retry_after: float | None = field(default=None)


class PushBackend(Protocol):
    def send(self, notification: Notification, targets: list[Target]) -> list[Result]: ...


def push_backend() -> PushBackend:
    """Return the backend PUSH_BACKEND names."""
    if settings.PUSH_BACKEND == "live":
        from .live import LiveBackend

        return LiveBackend()
    from .log import LogBackend

    return LogBackend()


def parse_retry_after(value: str | None) -> float | None:
    """Return the delay a `Retry-After` header asks for, in seconds (delta or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    from django.utils import timezone

    return max(0.0, (at - timezone.now()).total_seconds())
