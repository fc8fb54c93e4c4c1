"""Status webhooks of senders (SPEC.md section 8): endpoints, the event outbox, delivery attempts.

An event row is written in the transaction of the status change it reports (one per subscribed
endpoint), so nothing is lost when a process dies after commit; delivery tasks and the beat
sweep claim due rows with a compare-and-set on `next_attempt_at`.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from .signing import secret_new


class EventType(models.TextChoices):
    MESSAGE_SENT = "message.sent"
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_READ = "message.read"
    MESSAGE_FAILED = "message.failed"
    MESSAGE_CANCELED = "message.canceled"
    CHAT_MESSAGE_RECEIVED = "chat.message_received"


class EventStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    GIVEN_UP = "given_up"


class AttemptOutcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"
    # The last failing attempt: the event is given up.
    GAVE_UP = "gave_up"


class WebhookEndpoint(models.Model):
    """A URL of a sender's that receives the events it subscribed to, signed with `secret`."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    description = models.CharField(max_length=500, blank=True)
    # `whsec_` + base64 of the key; shown to the sender only on create and on rotate.
    secret = models.CharField(max_length=100, default=secret_new)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # First failed attempt since the last success: 24 h of nothing but failures deactivates.
    failing_since = models.DateTimeField(null=True, blank=True)
    deactivated_at = models.DateTimeField(null=True, blank=True)
    # While a worker delivers this endpoint's events, until when it holds the lane (one worker
    # per endpoint at a time: a slow receiver holds one worker slot, not all of them).
    lane_until = models.DateTimeField(null=True, blank=True)
    # The receiver could not be reached: nothing is tried before this (its oldest event's
    # next attempt), so a dead receiver costs one timeout per backoff step, not one per event.
    paused_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["owner"], condition=Q(is_active=True), name="webhook_endpoint_active_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.url} ({self.owner_id})"

    @property
    def secret_hint(self) -> str:
        """Return the secret with all but its first characters masked (admin, logs)."""
        return f"{self.secret[:10]}…" if self.secret else ""


class WebhookEvent(models.Model):
    """One status change for one endpoint: the outbox row, retried until delivered or given up.

    `payload` is fixed when the change is recorded; only `recipient_phone_number` is read when
    it is sent (from `recipient_id`), so that an erased phone number is never sent later.
    """

    # The primary key orders an endpoint's events by creation; `event_id` is `webhook-id`.
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="webhook_events")
    type = models.CharField(max_length=32, choices=EventType.choices)
    payload = models.JSONField()
    recipient_id = models.BigIntegerField(null=True, blank=True)
    # The message it is about: the admin's message timeline lists its events by it.
    message_id = models.UUIDField(null=True, blank=True, db_index=True)
    status = models.CharField(max_length=16, choices=EventStatus.choices, default=EventStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Due when pending and not in the future; a claim moves it ahead by a lease, so a worker
    # that dies mid-attempt leaves the event due again once the lease ends.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The sweep: due events of every endpoint.
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="pending"), name="webhook_event_due_idx"
            ),
            # A lane: one endpoint's pending events in creation order.
            models.Index(
                fields=["endpoint", "id"], condition=Q(status="pending"), name="webhook_event_lane_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class WebhookDelivery(models.Model):
    """One attempt to POST an event to its endpoint (`GET webhooks/{id}/deliveries/`)."""

    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    attempt = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField(default=0)
    # When the event is tried again (None: delivered or given up).
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["endpoint", "-id"], name="webhook_delivery_endpoint_idx")]

    def __str__(self) -> str:
        return f"attempt {self.attempt} of {self.event_id}: {self.outcome}"
