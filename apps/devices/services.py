"""Writes: device registration, preferences, and the push fallback (SPEC.md section 5).

A push is a wake-up call, never a delivery: nothing here changes a message's status. It only
records each attempt as a DeliveryAttempt (channel fcm/apns) and keeps tokens healthy.

Flow: delivery (messages_deliver_chunk) finds the recipient offline → `push_schedule` (after
commit) opens a coalescing window per recipient (Redis SET NX with expiry) and enqueues one task for its end →
`push_window_close` looks at what is still undelivered, holds the push (quiet hours, push off)
or sends one notification for the newest message with the count → `push_send` acts on each
token's answer and schedules a retry for transient failures.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.accounts import presence
from apps.accounts.models import MobileUser
from apps.accounts.party import Party
from apps.common import metrics
from apps.common.backoff import retry_delay
from apps.common.redis import redis_client
from apps.messaging.models import Channel, DeliveryAttempt, Message, Outcome, Status

from . import selectors
from .backends import Notification, Result, Target, Verdict, push_backend
from .models import DeviceToken, Platform, PushHold, PushPreferences

logger = logging.getLogger(__name__)

# Transient failures in a row after which a token is given up.
MAX_CONSECUTIVE_FAILURES = 3
BODY_LENGTH = 100


# --- Devices and preferences ------------------------------------------------------------


def device_register(*, mobile_user: MobileUser, token: str, platform: str) -> tuple[DeviceToken, bool]:
    """Register `token` for `mobile_user`; return the device and whether it is new.

    A known token is moved to the caller and reactivated (an app reinstalled, a phone that
    changed hands), with its failure history cleared.
    """
    reset = {
        "mobile_user": mobile_user,
        "platform": platform,
        "is_active": True,
        "consecutive_failures": 0,
        "last_error": "",
    }
    if DeviceToken.objects.filter(token=token).update(**reset):
        return DeviceToken.objects.get(token=token), False
    try:
        with transaction.atomic():
            return DeviceToken.objects.create(token=token, **reset), True
    except IntegrityError:
        # Registered concurrently by another request: the same outcome as a re-registration.
        DeviceToken.objects.filter(token=token).update(**reset)
        return DeviceToken.objects.get(token=token), False


def device_update(*, device: DeviceToken, is_active: bool) -> DeviceToken:
    """Switch a device on or off; switching on clears its failure count."""
    changes: dict = {"is_active": is_active}
    if is_active:
        changes.update(consecutive_failures=0, last_error="")
    DeviceToken.objects.filter(pk=device.pk).update(**changes)
    device.refresh_from_db()
    return device


def device_delete(*, device: DeviceToken) -> None:
    device.delete()


def devices_set_active(*, device_ids: list[int], is_active: bool) -> int:
    """Activate or deactivate devices (admin actions); return how many changed."""
    rows = DeviceToken.objects.filter(pk__in=device_ids).exclude(is_active=is_active)
    if is_active:
        return rows.update(is_active=True, consecutive_failures=0, last_error="")
    return rows.update(is_active=False)


def preferences_update(*, mobile_user: MobileUser, **changes: object) -> PushPreferences:
    """Save the given preference fields (push_enabled, quiet_hours_*, timezone)."""
    preferences, _ = PushPreferences.objects.update_or_create(mobile_user=mobile_user, defaults=changes)
    return preferences


# --- Push: coalescing window ------------------------------------------------------------


def _window_key(recipient_id: int) -> str:
    return f"push:window:{recipient_id}"


def _more_key(recipient_id: int) -> str:
    return f"push:window:{recipient_id}:more"


def push_schedule(*, recipient_id: int) -> bool:
    """Wake the recipient's devices now, or fold this message into its window's last push.

    The first message that finds the recipient offline opens a window of PUSH_COALESCE_SECONDS
    and is pushed at once (SPEC.md section 5: the wake-up must not wait for the window). Those
    that arrive while the window is open only mark it: when it ends, one more push covers them
    all (the newest undelivered message, with the count). So a burst costs at most two pushes a
    window, the first without delay. Return whether this call opened the window.

    Called after commit: it must not raise, a lost push is only a later reconnect.
    """
    from .tasks import push_first, push_window_end

    window = settings.PUSH_COALESCE_SECONDS
    ttl = max(1, round(window))
    try:
        client = redis_client()
        opened = client.set(_window_key(recipient_id), "1", nx=True, ex=ttl)
        if not opened:
            client.set(_more_key(recipient_id), "1", ex=ttl + 60)
            return False
        client.delete(_more_key(recipient_id))  # a mark of an earlier window is not ours
        # The high lane: a wake-up is what the user waits for.
        push_first.apply_async(args=[recipient_id], queue="high")
        push_window_end.apply_async(args=[recipient_id], countdown=window)
    except Exception as exc:  # noqa: BLE001 - Redis or broker down: no push, nothing else breaks
        logger.warning("push.schedule_failed", extra={"recipient_id": recipient_id, "error": repr(exc)})
        return False
    return True


def push_window_trail(*, recipient_id: int) -> str:
    """At the end of a window: push once more if messages arrived during it; return what happened."""
    try:
        more = redis_client().getdel(_more_key(recipient_id))
    except Exception as exc:  # noqa: BLE001 - push anyway: a duplicate wake-up beats none
        logger.warning("push.window_state_unknown", extra={"recipient_id": recipient_id, "error": repr(exc)})
        more = b"1"
    if not more:
        return "quiet"
    return push_window_close(recipient_id=recipient_id)


def push_window_close(*, recipient_id: int, now: datetime | None = None) -> str:
    """Push the recipient's newest undelivered message, or hold or skip it; return which."""
    now = now or timezone.now()
    undelivered = selectors.undelivered_for_push(recipient_id=recipient_id)
    newest = undelivered.first()
    if newest is None:
        PushHold.objects.filter(mobile_user_id=recipient_id).delete()
        return "nothing"  # everything was acked (or failed) meanwhile
    if presence.is_online(Party.mobile(recipient_id)):
        return "online"  # the backlog delivery takes it from here
    preferences = selectors.preferences_for(mobile_user_id=recipient_id)
    if not preferences.allows_push(now, urgent=selectors.has_urgent(undelivered)):
        PushHold.objects.get_or_create(mobile_user_id=recipient_id, defaults={"held_at": now})
        logger.info("push.held", extra={"recipient_id": recipient_id})
        return "held"
    PushHold.objects.filter(mobile_user_id=recipient_id).delete()
    report = push_send(message_id=newest.pk, count=undelivered.count())
    return "sent" if report.results else "no_devices"


def push_holds_release(*, now: datetime | None = None) -> int:
    """Send the held pushes whose user allows pushes again; return how many were released."""
    now = now or timezone.now()
    released = 0
    for hold in selectors.push_holds():
        preferences = selectors.preferences_for(mobile_user_id=hold.mobile_user_id)
        if not preferences.allows_push(now):
            continue
        # Claim it: of two beats releasing at once, only the one whose delete counts sends.
        deleted, _ = PushHold.objects.filter(pk=hold.pk, held_at=hold.held_at).delete()
        if deleted:
            push_window_close(recipient_id=hold.mobile_user_id, now=now)
            released += 1
    return released


# --- Push: sending and token hygiene ----------------------------------------------------


@dataclass
class PushReport:
    results: list[Result] = field(default_factory=list)
    retry_device_ids: list[int] = field(default_factory=list)
    retry_in: float | None = None


def notification_for(message: Message, *, count: int = 1) -> Notification:
    """Return the push for `message`: title, first characters of the body, and ids as data."""
    conversation_id = getattr(message, "conversation_id", None)
    return Notification(
        title=message.subject or message.sender.name,
        body=message.content[:BODY_LENGTH],
        data={
            "message_id": str(message.pk),
            "conversation_id": str(conversation_id) if conversation_id else "",
            "kind": message.kind,
            "count": str(count),
        },
        high_priority=message.priority == "high",
        collapse_key=f"inbox-{message.recipient_id}",
    )


def push_send(
    *, message_id: object, count: int = 1, device_ids: list[int] | None = None, attempt: int = 1
) -> PushReport:
    """Push `message_id` to the recipient's active tokens (or those of `device_ids` still active).

    Record one delivery attempt per token, update each token from its answer, and schedule a
    retry of the transiently failed ones. Skip a message that is no longer waiting.
    """
    message = Message.objects.select_related("sender").filter(pk=message_id, status=Status.PENDING).first()
    if message is None:
        return PushReport()
    devices = selectors.active_devices(recipient_id=message.recipient_id)
    if device_ids is not None:
        devices = devices.filter(pk__in=device_ids)
    targets = [Target(d.pk, d.token, d.platform) for d in devices]
    if not targets:
        return PushReport()
    results = push_backend().send(notification_for(message, count=count), targets)
    now = timezone.now()
    platforms = {t.device_id: t.platform for t in targets}
    DeliveryAttempt.objects.bulk_create(
        DeliveryAttempt(
            message=message,
            at=now,
            channel=Channel.FCM if platforms[r.device_id] == Platform.ANDROID else Channel.APNS,
            outcome=Outcome.SENT if r.verdict == Verdict.SENT else Outcome.ERROR,
            error="" if r.verdict == Verdict.SENT else f"device {r.device_id}: {r.error}"[:500],
        )
        for r in results
    )
    for r in results:
        metrics.push_sent(platform=platforms[r.device_id], outcome=r.verdict)
    report = PushReport(results=results)
    report.retry_device_ids = tokens_update(results, now=now)
    if report.retry_device_ids:
        hinted = [r.retry_after or 0 for r in results if r.device_id in report.retry_device_ids]
        report.retry_in = max([retry_delay(attempt), *hinted])
        _retry_schedule(message.pk, report.retry_device_ids, attempt + 1, report.retry_in)
    logger.info(
        "push.sent",
        extra={"message_id": str(message.pk), "verdicts": [r.verdict for r in results], "attempt": attempt},
    )
    return report


def tokens_update(results: list[Result], *, now: datetime) -> list[int]:
    """Apply the providers' answers to the tokens; return the ids worth retrying."""
    by_verdict: dict[Verdict, list[Result]] = {}
    for result in results:
        by_verdict.setdefault(result.verdict, []).append(result)
    if sent := by_verdict.get(Verdict.SENT):
        DeviceToken.objects.filter(pk__in=[r.device_id for r in sent]).update(
            consecutive_failures=0, last_used_at=now, last_error=""
        )
    for result in by_verdict.get(Verdict.INVALID_TOKEN, []):
        DeviceToken.objects.filter(pk=result.device_id).update(is_active=False, last_error=result.error)
        logger.info("push.token_invalid", extra={"device_id": result.device_id, "error": result.error})
    for result in by_verdict.get(Verdict.REJECTED, []):
        DeviceToken.objects.filter(pk=result.device_id).update(last_error=result.error)
    retry: list[int] = []
    for result in by_verdict.get(Verdict.TRANSIENT, []):
        DeviceToken.objects.filter(pk=result.device_id).update(
            consecutive_failures=F("consecutive_failures") + 1, last_error=result.error
        )
        given_up = DeviceToken.objects.filter(
            pk=result.device_id, consecutive_failures__gte=MAX_CONSECUTIVE_FAILURES, is_active=True
        ).update(is_active=False)
        if not given_up:
            retry.append(result.device_id)
    for result in by_verdict.get(Verdict.CONFIGURATION, []):
        # Our credentials are wrong, not the token: alarm, and leave the token as it is.
        logger.error("push.configuration_alarm", extra={"device_id": result.device_id, "error": result.error})
    return retry


def _retry_schedule(message_id: object, device_ids: list[int], attempt: int, countdown: float) -> None:
    from .tasks import push_retry

    try:
        push_retry.apply_async(args=[str(message_id), device_ids, attempt], countdown=countdown)
    except Exception as exc:  # noqa: BLE001 - broker down: the next message's push covers it
        extra = {"message_id": str(message_id), "error": repr(exc)}
        logger.warning("push.retry_schedule_failed", extra=extra)


def push_test_send(*, device: DeviceToken) -> Result:
    """Send a test push to one device (admin action) and apply its answer to the token."""
    notification = Notification(title="Test push", body="This is a test push.", data={"kind": "test"})
    [result] = push_backend().send(notification, [Target(device.pk, device.token, device.platform)])
    tokens_update([result], now=timezone.now())
    return result
