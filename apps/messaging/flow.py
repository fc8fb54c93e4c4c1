"""Admission of new sends (SPEC.md section 4): rate limits per sender tier, then backpressure.

Both are checked before anything is stored, and both refuse only new work: a message already
accepted is never dropped. Both fail open when Redis is unreachable, because a send must still
be accepted (and kept `queued`) through a Redis outage.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from http import HTTPStatus

import redis
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from redis.exceptions import RedisError

from apps.accounts.models import MobileUser, Tier, User
from apps.common.errors import DomainError
from apps.common.ratelimit import MultiWindowLimiter

from .models import Message, Status

logger = logging.getLogger(__name__)

MINUTE, HOUR = 60, 3600
# (limit, window seconds) per tier, exactly as specified.
TIER_LIMITS: dict[str, list[tuple[int, int]]] = {
    Tier.BASIC: [(100, MINUTE), (1_000, HOUR)],
    Tier.PREMIUM: [(1_000, MINUTE)],
    Tier.ENTERPRISE: [(10_000, MINUTE)],
}
BROKER_QUEUES = ("high", "default", "low")
BACKPRESSURE_RETRY_AFTER_SECONDS = 5


class SendRateLimited(DomainError):
    """429 with Retry-After: the sender's tier allows no more messages now."""

    status_code = HTTPStatus.TOO_MANY_REQUESTS
    code = "rate_limited"
    default_detail = "Too many messages for your tier; retry later."

    def __init__(self, detail: str | None = None, *, wait: float) -> None:
        super().__init__(detail, retry_after=wait)
        seconds = self.retry_after_seconds
        self.detail = f"{self.detail} Expected available in {seconds} second{'s' if seconds != 1 else ''}."
        self.args = (self.detail,)


class Overloaded(DomainError):
    """503 with Retry-After: the backlog is past MESSAGING_BACKLOG_LIMIT."""

    status_code = HTTPStatus.SERVICE_UNAVAILABLE
    code = "overloaded"
    default_detail = "The service is overloaded; retry later."
    retry_after = BACKPRESSURE_RETRY_AFTER_SECONDS


def send_limiter(tier: str) -> MultiWindowLimiter:
    return MultiWindowLimiter(name=f"send-{tier}", windows=TIER_LIMITS.get(tier, TIER_LIMITS[Tier.BASIC]))


def sends_admit(*, sender: User, count: int) -> None:
    """Admit `count` new messages of `sender`, or raise SendRateLimited (429) or Overloaded (503).

    The backlog is checked first: a refusal for overload must not use up the sender's quota.
    """
    backlog_admit()
    if not settings.MESSAGING_RATE_LIMITS_ENABLED:
        return
    limiter = send_limiter(sender.tier)
    decision = limiter.hit(str(sender.pk), cost=count)
    if decision.allowed:
        return
    limits = " and ".join(
        f"{limit:,} per {'minute' if w == MINUTE else 'hour'}" for limit, w in limiter_windows(sender)
    )
    if any(count > limit for limit, _ in limiter_windows(sender)):
        detail = f"{count:,} messages in one request exceed your tier's limit ({limits})."
    else:
        detail = f"Rate limit of your tier ({sender.tier}: {limits}) reached."
    raise SendRateLimited(detail, wait=decision.retry_after)


def limiter_windows(sender: User) -> list[tuple[int, int]]:
    return TIER_LIMITS.get(sender.tier, TIER_LIMITS[Tier.BASIC])


def mobile_send_limiter() -> MultiWindowLimiter:
    return MultiWindowLimiter(
        name="send-mobile",
        windows=[
            (settings.MESSAGING_MOBILE_SENDS_PER_MINUTE, MINUTE),
            (settings.MESSAGING_MOBILE_SENDS_PER_HOUR, HOUR),
        ],
    )


def chat_sends_admit(*, author: User | MobileUser) -> None:
    """Admit one chat message of `author`, or raise SendRateLimited (429) or Overloaded (503).

    A business author counts against its tier (`sends_admit`); a mobile user, who has no tier,
    against MESSAGING_MOBILE_SENDS_PER_MINUTE/_PER_HOUR: the REST API and the socket alike, so
    neither is a way around the other's limit.
    """
    if isinstance(author, User):
        sends_admit(sender=author, count=1)
        return
    backlog_admit()
    if not settings.MESSAGING_RATE_LIMITS_ENABLED:
        return
    decision = mobile_send_limiter().hit(f"mobile:{author.pk}")
    if not decision.allowed:
        per_minute, per_hour = (
            settings.MESSAGING_MOBILE_SENDS_PER_MINUTE,
            settings.MESSAGING_MOBILE_SENDS_PER_HOUR,
        )
        raise SendRateLimited(
            f"Rate limit of mobile users ({per_minute:,} per minute and {per_hour:,} per hour) reached.",
            wait=decision.retry_after,
        )


# --- Backpressure ---------------------------------------------------------------------------

_backlog_lock = threading.Lock()
_backlog_cache: tuple[float, int] | None = None


def backlog_cache_clear() -> None:
    global _backlog_cache
    with _backlog_lock:
        _backlog_cache = None


def backlog_admit() -> None:
    """Raise Overloaded if the backlog is past MESSAGING_BACKLOG_LIMIT."""
    limit = settings.MESSAGING_BACKLOG_LIMIT
    size = backlog_size(cap=limit + 1)
    if size > limit:
        logger.warning("message.backpressure", extra={"backlog": size, "limit": limit})
        raise Overloaded(f"More than {limit:,} messages are waiting for delivery; retry later.")


def backlog_size(*, cap: int) -> int:
    """Return the backlog (queued + due messages, plus broker queue lengths), counted up to `cap`.

    The figure is cached per process for MESSAGING_BACKLOG_CACHE_SECONDS: every send asks, and
    a second-old figure is precise enough to shed load.
    """
    global _backlog_cache
    ttl = settings.MESSAGING_BACKLOG_CACHE_SECONDS
    now = time.monotonic()
    with _backlog_lock:
        if _backlog_cache is not None and now - _backlog_cache[0] < ttl:
            return _backlog_cache[1]
    size = _due_messages(cap=cap)
    if size < cap:
        size += _broker_queue_length()
    with _backlog_lock:
        _backlog_cache = (now, size)
    return size


def _due_messages(*, cap: int) -> int:
    # Both branches are served by the partial index message_due_idx (status, next_attempt_at);
    # the LIMIT bounds the work however deep the backlog is. Pending messages waiting for their
    # recipient to connect (next_attempt_at null) are not work the workers can do.
    due = Message.objects.filter(
        Q(status=Status.QUEUED)
        | Q(status__in=(Status.PENDING, Status.SENT), next_attempt_at__lte=timezone.now())
    )
    return due.order_by().values("pk")[:cap].count()


@lru_cache(maxsize=4)
def broker_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


def _broker_queue_length() -> int:
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return 0
    try:
        pipe = broker_client(url).pipeline(transaction=False)
        for queue in BROKER_QUEUES:
            pipe.llen(queue)
        return sum(pipe.execute())
    except RedisError as exc:
        # Fail open: the broker being down is already handled (messages stay queued).
        logger.warning("message.backlog_broker_unavailable", extra={"error": repr(exc)})
        return 0
