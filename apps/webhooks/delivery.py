"""Sending events: lanes (one worker per endpoint at a time), claims, attempts, retries, the sweep.

An endpoint's due events leave in creation order from its *lane*: a lease on the endpoint row
(`lane_until`, taken and released with compare-and-set updates), so one slow or dead
receiver occupies at most one worker slot, for one time slice after which its task goes back
to the end of the queue. A receiver that cannot be reached at all (refused address, connect
error, timeout) *pauses* its endpoint until the failed event's next attempt: a dead receiver
costs one timeout per backoff step, not one per event waiting for it.

Within a lane, events are claimed in batches by moving their `next_attempt_at` ahead by a
lease (FOR UPDATE SKIP LOCKED, then a conditional update): a worker killed mid-attempt leaves
them due again when the lease ends, and the beat sweep (`lanes_sweep`) wakes every endpoint
with due events and a free lane. Delivery is at least once; receivers dedupe by webhook-id.

Due times, leases and pauses are set and compared on the shared clock (apps/common/clock.py),
as the events are recorded by whichever process changed a message: a worker whose host clock
is off neither leaves events waiting nor retries them early.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q

from apps.accounts.models import MobileUser
from apps.common import clock as shared_clock
from apps.common import metrics
from apps.common.redis import redis_client

from . import client
from .models import AttemptOutcome, EventStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent
from .signing import signature

logger = logging.getLogger(__name__)

DEACTIVATE_AFTER = timedelta(hours=24)


def retry_delay(attempt: int, *, jitter: bool = True) -> float:
    """Return the seconds between failed attempt number `attempt` (1-based) and the next one.

    WEBHOOK_RETRY_BASE_SECONDS doubled per attempt, capped at WEBHOOK_RETRY_MAX_SECONDS (1 h);
    with `jitter`, drawn from [delay / 2, delay], so it never exceeds the cap.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    delay = min(
        settings.WEBHOOK_RETRY_MAX_SECONDS, settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** min(attempt - 1, 62)
    )
    return random.uniform(delay / 2, delay) if jitter else delay


def lease_seconds() -> float:
    """Return how long a claim or a lane lasts without news: longer than any one attempt."""
    return settings.WEBHOOK_LEASE_SECONDS or 2 * settings.WEBHOOK_TIMEOUT_SECONDS + 5


# --- waking lanes -------------------------------------------------------------------------


def _wake_key(endpoint_id: int) -> str:
    return f"webhooks:wake:{endpoint_id}"


def lanes_wake(endpoint_ids: Iterable[int]) -> int:
    """Enqueue a delivery task for each endpoint that has none waiting; return how many were enqueued.

    Called after commit; must not raise: a lost wake-up is the sweep's to find.
    """
    from .tasks import deliver_endpoint

    enqueued = 0
    try:
        redis = redis_client()
        ttl = max(1, round(lease_seconds()))
        for endpoint_id in endpoint_ids:
            # One waiting task per endpoint is enough: the task clears the flag when it starts.
            if redis.set(_wake_key(endpoint_id), "1", nx=True, ex=ttl):
                deliver_endpoint.delay(endpoint_id)
                enqueued += 1
    except Exception as exc:  # noqa: BLE001 - Redis or broker down: the sweep re-dispatches
        logger.warning("webhook.wake_failed", extra={"endpoint_ids": list(endpoint_ids), "error": repr(exc)})
    return enqueued


def wake_flag_clear(endpoint_id: int) -> None:
    try:
        redis_client().delete(_wake_key(endpoint_id))
    except Exception as exc:  # noqa: BLE001 - the flag expires by itself
        logger.warning("webhook.wake_clear_failed", extra={"endpoint_id": endpoint_id, "error": repr(exc)})


def _free(field: str, now: datetime) -> Q:
    return Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__lte": now})


def due_endpoint_ids(*, now: datetime, limit: int = 1000) -> list[int]:
    """Return active, unpaused endpoints with a free lane and at least one due event."""
    due = WebhookEvent.objects.filter(
        endpoint=OuterRef("pk"), status=EventStatus.PENDING, next_attempt_at__lte=now
    )
    return list(
        WebhookEndpoint.objects.filter(_free("lane_until", now), _free("paused_until", now), is_active=True)
        .filter(Exists(due))
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )


def lanes_sweep(*, now: datetime | None = None) -> int:
    """Wake every endpoint with due events (beat; idempotent); return how many tasks were enqueued."""
    return lanes_wake(due_endpoint_ids(now=now or shared_clock.now()))


# --- a lane ---------------------------------------------------------------------------------


class _Lane:
    """An endpoint's lane while held: `until` is the end of the current lease (compare-and-set key)."""

    def __init__(self, endpoint_id: int, until: datetime) -> None:
        self.endpoint_id = endpoint_id
        self.until = until

    @classmethod
    def take(cls, endpoint_id: int, now: datetime) -> _Lane | None:
        """Take the endpoint's lane unless it is held, paused or inactive (compare-and-set)."""
        until = now + timedelta(seconds=lease_seconds())
        taken = WebhookEndpoint.objects.filter(
            _free("lane_until", now), _free("paused_until", now), pk=endpoint_id, is_active=True
        ).update(lane_until=until)
        return cls(endpoint_id, until) if taken else None

    def renew(self, now: datetime) -> None:
        until = now + timedelta(seconds=lease_seconds())
        if WebhookEndpoint.objects.filter(pk=self.endpoint_id, lane_until=self.until).update(
            lane_until=until
        ):
            self.until = until

    def release(self) -> None:
        WebhookEndpoint.objects.filter(pk=self.endpoint_id, lane_until=self.until).update(lane_until=None)


def _claim(endpoint_id: int, now: datetime, lease: datetime) -> list[WebhookEvent]:
    """Claim the endpoint's oldest due events (at most WEBHOOK_BATCH): move them to `lease`."""
    due = Q(endpoint_id=endpoint_id, status=EventStatus.PENDING, next_attempt_at__lte=now)
    with transaction.atomic():
        ids = list(
            WebhookEvent.objects.filter(due)
            .select_for_update(skip_locked=True)
            .order_by("id")
            .values_list("id", flat=True)[: settings.WEBHOOK_BATCH]
        )
        if not ids:
            return []
        WebhookEvent.objects.filter(due, id__in=ids).update(next_attempt_at=lease)
    return list(WebhookEvent.objects.filter(id__in=ids, next_attempt_at=lease).order_by("id"))


def _unclaim(events: list[WebhookEvent], lease: datetime, now: datetime) -> None:
    WebhookEvent.objects.filter(
        id__in=[e.pk for e in events], status=EventStatus.PENDING, next_attempt_at=lease
    ).update(next_attempt_at=now)


def body_for(event: WebhookEvent, *, phone_number: str | None) -> bytes:
    """Return the JSON body of `event`: its fixed payload with the recipient's current phone number."""
    data = {**event.payload, "recipient_phone_number": phone_number}
    document = {"id": str(event.event_id), "type": event.type, "timestamp": data["at"], "data": data}
    return json.dumps(document, separators=(",", ":")).encode()


def headers_for(event: WebhookEvent, *, secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    webhook_id = str(event.event_id)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret=secret, webhook_id=webhook_id, timestamp=timestamp, body=body),
    }


def _phones(events: list[WebhookEvent]) -> dict[int, str]:
    ids = {e.recipient_id for e in events if e.recipient_id is not None}
    if not ids:
        return {}
    return dict(MobileUser.objects.filter(pk__in=ids).values_list("pk", "phone_number"))


@dataclass(frozen=True)
class _Sent:
    event: WebhookEvent
    answer: client.Answer
    at: datetime


def _batch_record(
    endpoint: WebhookEndpoint, sent: list[_Sent], *, lease: datetime
) -> tuple[list[WebhookDelivery], bool]:
    """Store the attempts of one batch and each event's next step, in one transaction.

    Return the attempt rows (in order) and whether the endpoint was deactivated. Recorded per
    batch rather than per event: a worker that dies mid-batch sends those events again, which
    at-least-once allows, and each event costs no round trip of its own.
    """
    deliveries: list[WebhookDelivery] = []
    delivered: list[int] = []
    failing_since = endpoint.failing_since
    for item in sent:
        attempt = item.event.attempts + 1
        delivery = WebhookDelivery(
            event=item.event,
            endpoint=endpoint,
            attempt=attempt,
            status_code=item.answer.status_code,
            error=item.answer.error,
            at=item.at,
            duration_ms=round(item.answer.seconds * 1000),
        )
        if item.answer.ok:
            delivery.outcome = AttemptOutcome.SUCCESS
            delivered.append(item.event.pk)
            failing_since = None
        else:
            given_up = attempt >= settings.WEBHOOK_MAX_ATTEMPTS
            delivery.next_attempt_at = None if given_up else item.at + timedelta(seconds=retry_delay(attempt))
            delivery.outcome = AttemptOutcome.GAVE_UP if given_up else AttemptOutcome.FAILURE
            failing_since = failing_since or item.at
        item.event.attempts = attempt
        deliveries.append(delivery)
    now = sent[-1].at
    deactivated = False
    try:
        with transaction.atomic():
            deactivated = _batch_store(endpoint, deliveries, delivered, failing_since, now=now, lease=lease)
    except IntegrityError:  # the endpoint was deleted while its events were being sent
        logger.info("webhook.endpoint_gone", extra={"endpoint_id": endpoint.pk})
        return deliveries, True
    if deactivated:
        logger.warning("webhook.endpoint_deactivated", extra={"endpoint_id": endpoint.pk})
    for delivery in deliveries:
        metrics.webhook_delivery(outcome=delivery.outcome)
    return deliveries, deactivated


def _batch_store(
    endpoint: WebhookEndpoint,
    deliveries: list[WebhookDelivery],
    delivered: list[int],
    failing_since: datetime | None,
    *,
    now: datetime,
    lease: datetime,
) -> bool:
    """Write a batch's outcomes (in the caller's transaction); return whether it deactivated the endpoint."""
    deactivated = False
    if delivered:
        # Success counts whatever the claim became meanwhile: sending it again is pointless.
        WebhookEvent.objects.filter(pk__in=delivered, status=EventStatus.PENDING).update(
            status=EventStatus.DELIVERED,
            delivered_at=now,
            attempts=F("attempts") + 1,
            next_attempt_at=None,
        )
    for delivery in deliveries:
        if delivery.outcome != AttemptOutcome.SUCCESS:
            # Only while our claim holds: a redelivery or a later claim decides otherwise.
            WebhookEvent.objects.filter(
                pk=delivery.event.pk, status=EventStatus.PENDING, next_attempt_at=lease
            ).update(
                status=EventStatus.GIVEN_UP
                if delivery.outcome == AttemptOutcome.GAVE_UP
                else EventStatus.PENDING,
                attempts=delivery.attempt,
                next_attempt_at=delivery.next_attempt_at,
            )
    WebhookDelivery.objects.bulk_create(deliveries)
    if failing_since != endpoint.failing_since:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=failing_since)
        endpoint.failing_since = failing_since
    if failing_since is not None and failing_since <= now - DEACTIVATE_AFTER:
        deactivated = bool(
            WebhookEndpoint.objects.filter(pk=endpoint.pk, is_active=True).update(
                is_active=False, deactivated_at=now
            )
        )
    return deactivated


@dataclass
class LaneReport:
    attempts: int = 0
    delivered: int = 0
    # The time slice ended with events still due: the task goes back to the queue.
    more: bool = False


def _due(endpoint_id: int, now: datetime) -> bool:
    return WebhookEvent.objects.filter(
        endpoint_id=endpoint_id, status=EventStatus.PENDING, next_attempt_at__lte=now
    ).exists()


def lane_run(
    *, endpoint_id: int, now: datetime | None = None, budget_seconds: float | None = None
) -> LaneReport:
    """Deliver the endpoint's due events, oldest first, while holding its lane.

    `now` fixes the clock (tests); `budget_seconds` bounds the time spent before giving the
    worker slot back. After releasing the lane, look once more for due events: one recorded
    while the lane was held may have had its wake-up task find the lane taken.
    """
    clock: Callable[[], datetime] = (lambda: now) if now is not None else shared_clock.now
    report = LaneReport()
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    while (lane := _Lane.take(endpoint_id, clock())) is not None:
        try:
            report.more = _lane_drain(lane, clock, report, deadline)
        finally:
            lane.release()
        if report.more or not _due(endpoint_id, clock()):
            break
    return report


def _lane_drain(
    lane: _Lane, clock: Callable[[], datetime], report: LaneReport, deadline: float | None
) -> bool:
    """Send batches until none is due or the receiver is unreachable; return whether time ran out.

    A slice ends after the round in which it ran out (or, for a slow receiver, within a round).
    """
    endpoint_id = lane.endpoint_id
    while True:
        lease = clock() + timedelta(seconds=lease_seconds())
        batch = _claim(endpoint_id, clock(), lease)
        if not batch:
            return False
        endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, is_active=True).first()
        if endpoint is None:  # deactivated meanwhile: its events wait for a reactivation
            _unclaim(batch, lease, clock())
            return False
        phones = _phones(batch)
        # Well before the claims and the lane expire, however slow the receiver answers.
        renew_by = time.monotonic() + lease_seconds() / 2
        sent: list[_Sent] = []
        for event in batch:
            body = body_for(event, phone_number=phones.get(event.recipient_id) or None)
            headers = headers_for(
                event, secret=endpoint.secret, body=body, timestamp=int(clock().timestamp())
            )
            answer = client.post(endpoint.url, body=body, headers=headers)
            sent.append(_Sent(event, answer, clock()))
            if answer.unreachable:
                # Whatever else is due would wait for the same timeout: it waits for this retry.
                break
            if (deadline is not None and time.monotonic() > deadline) or time.monotonic() > renew_by:
                break  # a slow receiver: record, renew the lane (or give the slot back), go on
        deliveries, deactivated = _batch_record(endpoint, sent, lease=lease)
        report.attempts += len(sent)
        report.delivered += sum(d.outcome == AttemptOutcome.SUCCESS for d in deliveries)
        now = clock()
        if sent[-1].answer.unreachable:
            last = deliveries[-1]
            pause = last.next_attempt_at or now + timedelta(seconds=retry_delay(last.attempt))
            WebhookEndpoint.objects.filter(pk=endpoint_id).update(paused_until=pause)
            _unclaim(batch[len(sent) :], lease, now)
            logger.info(
                "webhook.endpoint_paused",
                extra={
                    "endpoint_id": endpoint_id,
                    "until": pause.isoformat(),
                    "error": sent[-1].answer.error,
                },
            )
            return False
        if deactivated:
            return False
        _unclaim(batch[len(sent) :], lease, now)
        lane.renew(now)
        if deadline is not None and time.monotonic() > deadline:
            return True  # at least one round per slice, so that a slice always makes progress
