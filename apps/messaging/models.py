"""Messages, their delivery attempts, dead letters and stored idempotency keys."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.accounts.models import MobileUser
from apps.accounts.party import Party


class Status(models.TextChoices):
    QUEUED = "queued"
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    # Sender integration (SPEC.md section 8): not yet due, and withdrawn by the sender.
    SCHEDULED = "scheduled"
    CANCELED = "canceled"


class Kind(models.TextChoices):
    ONE_WAY = "one_way"
    CHAT = "chat"


class ContentType(models.TextChoices):
    TEXT = "text"
    JSON = "json"


class Priority(models.TextChoices):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class BroadcastStatus(models.TextChoices):
    EXPANDING = "expanding"
    EXPANDED = "expanded"


class Broadcast(models.Model):
    """One content sent to many mobile users, expanded into messages by chunked tasks.

    `expanded_through` is the last recipient id expanded: each chunk claims the next ids with a
    compare-and-set on it, in the transaction that stores the chunk's messages, so a re-run or
    duplicated chunk task finds its range taken and creates nothing.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="broadcasts")
    subject = models.CharField(max_length=200, blank=True)
    content = models.TextField()
    content_type = models.CharField(max_length=8, choices=ContentType.choices, default=ContentType.TEXT)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    ttl_seconds = models.PositiveIntegerField(null=True, blank=True)
    send_at = models.DateTimeField(null=True, blank=True, help_text="Its messages are scheduled for then.")
    all_users = models.BooleanField(default=False)
    # The audience: the listed users, or (all_users) every active user up to this id, i.e.
    # those that existed when the broadcast was accepted.
    recipient_ids = models.JSONField(default=list, blank=True)
    audience_max_id = models.BigIntegerField(null=True, blank=True)
    total = models.PositiveIntegerField(help_text="Audience size when accepted.")
    expanded = models.PositiveIntegerField(default=0, help_text="Messages created so far.")
    expanded_through = models.BigIntegerField(default=0)
    status = models.CharField(
        max_length=12, choices=BroadcastStatus.choices, default=BroadcastStatus.EXPANDING
    )
    correlation_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    expanded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The sweep that restarts an expansion whose next-chunk task was lost.
            models.Index(
                fields=["updated_at"], condition=Q(status="expanding"), name="broadcast_expanding_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"broadcast {self.id} ({self.expanded}/{self.total}, {self.status})"


class Message(models.Model):
    """A one-way message to a mobile user, or a chat message in either direction.

    Exactly one author (`sender`, a business user, or `sender_mobile`) and exactly one
    recipient (`recipient`, a mobile user, or `recipient_business`); `seq` counts in the
    recipient's stream. `status` is written only by `lifecycle.transition`.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.ONE_WAY)
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="sent_messages",
        db_index=False,  # led by message_sender_created_idx
    )
    sender_mobile = models.ForeignKey(
        MobileUser,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="sent_messages",
        db_index=False,  # message_sender_mobile_idx, chat messages only
    )
    recipient = models.ForeignKey(
        MobileUser,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="messages",
        db_index=False,  # led by the unique (recipient, seq) constraint
    )
    recipient_business = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="inbox_messages",
        db_index=False,  # led by the unique (recipient_business, seq) constraint
    )
    conversation = models.ForeignKey(
        "conversations.Conversation",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="messages",
        db_index=False,  # led by message_conversation_idx
    )
    # Null only while `scheduled`: a message takes its seq when it becomes due.
    seq = models.BigIntegerField(
        null=True, blank=True, help_text="Gapless, strictly increasing per recipient."
    )
    subject = models.CharField(max_length=200, blank=True)
    content = models.TextField()
    content_type = models.CharField(max_length=8, choices=ContentType.choices, default=ContentType.TEXT)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    retry_count = models.PositiveSmallIntegerField(default=0)
    # When a sweep should next act: dispatch a `queued` message nobody dispatched, time out the
    # ack of a `sent` one, retry a `pending` one after backoff (null: as soon as it is online).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    canceled_at = models.DateTimeField(null=True, blank=True)
    failure_reason = models.CharField(max_length=500, blank=True)
    ttl_seconds = models.PositiveIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    # When a scheduled message becomes due (SPEC.md section 8); TTL counts from it.
    send_at = models.DateTimeField(null=True, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    # Indexed by the unique constraint below (its leading column), not by a second index.
    broadcast = models.ForeignKey(
        Broadcast, null=True, blank=True, on_delete=models.PROTECT, related_name="messages", db_index=False
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Each stream's seqs are unique. Partial: a message is in one stream, so an index
            # entry for the other one's null would be written (and checked) for nothing.
            models.UniqueConstraint(
                fields=["recipient", "seq"],
                condition=Q(recipient__isnull=False),
                name="message_unique_recipient_seq",
            ),
            models.UniqueConstraint(
                fields=["recipient_business", "seq"],
                condition=Q(recipient_business__isnull=False),
                name="message_unique_recipient_business_seq",
            ),
            models.CheckConstraint(
                condition=Q(sender__isnull=False, sender_mobile__isnull=True)
                | Q(sender__isnull=True, sender_mobile__isnull=False),
                name="message_has_exactly_one_author",
            ),
            models.CheckConstraint(
                condition=Q(recipient__isnull=False, recipient_business__isnull=True)
                | Q(recipient__isnull=True, recipient_business__isnull=False),
                name="message_has_exactly_one_recipient",
            ),
            # Chat messages live in a conversation; one-way messages go from a business to a
            # mobile user and never belong to one, so nothing can answer them.
            models.CheckConstraint(
                condition=Q(kind="chat", conversation__isnull=False)
                | Q(
                    kind="one_way",
                    conversation__isnull=True,
                    sender__isnull=False,
                    recipient__isnull=False,
                ),
                name="message_kind_matches_conversation",
            ),
            # Only a scheduled message, or one canceled while scheduled, lacks a seq (the
            # promotion gives it one, then queues it).
            models.CheckConstraint(
                condition=Q(seq__isnull=False) | Q(status__in=["scheduled", "canceled"]),
                name="message_seq_unless_scheduled",
            ),
            # A broadcast reaches each recipient once, whatever its tasks do.
            models.UniqueConstraint(
                fields=["broadcast", "recipient"],
                condition=Q(broadcast__isnull=False),
                name="message_unique_broadcast_recipient",
            ),
        ]
        indexes = [
            # Catch-up and the pending sweep: a recipient's undelivered messages in seq order.
            models.Index(
                fields=["recipient", "seq"],
                condition=Q(status__in=["queued", "pending", "sent"]),
                name="message_undelivered_idx",
            ),
            models.Index(
                fields=["recipient_business", "seq"],
                condition=Q(status__in=["queued", "pending", "sent"], recipient_business__isnull=False),
                name="message_biz_undelivered_idx",
            ),
            # A conversation's messages, newest first (cursor pagination).
            models.Index(
                fields=["conversation", "-created_at", "-id"],
                condition=Q(conversation__isnull=False),
                name="message_conversation_idx",
            ),
            # The outbox: a lane's oldest due queued messages (relay.lanes_due, the worker's claim).
            models.Index(
                fields=["priority", "next_attempt_at"],
                condition=Q(status="queued"),
                name="message_queued_idx",
            ),
            # Sweeps: due retries and ack deadlines.
            models.Index(
                fields=["status", "next_attempt_at"],
                condition=Q(status__in=["pending", "sent"]),
                name="message_due_idx",
            ),
            # The promotion of due scheduled messages, and a canceled seq's `skip` frame.
            models.Index(
                fields=["next_attempt_at"], condition=Q(status="scheduled"), name="message_scheduled_idx"
            ),
            models.Index(
                fields=["recipient", "seq"], condition=Q(status="canceled"), name="message_canceled_idx"
            ),
            models.Index(
                fields=["expires_at"],
                condition=Q(status__in=["queued", "pending", "sent"], expires_at__isnull=False),
                name="message_expiry_idx",
            ),
            # The retention purge (services/retention.py): old messages in a terminal status.
            models.Index(
                fields=["created_at"],
                condition=Q(status__in=["read", "failed", "canceled"]),
                name="message_retention_idx",
            ),
            # The sender's list, newest first, with its filters.
            models.Index(fields=["sender", "-created_at"], name="message_sender_created_idx"),
            models.Index(fields=["sender", "status", "-created_at"], name="message_sender_status_idx"),
            # A mobile user's own chat messages (export, erase, the PROTECT check).
            models.Index(
                fields=["sender_mobile"],
                condition=Q(sender_mobile__isnull=False),
                name="message_sender_mobile_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} → {self.recipient_party} #{self.seq} ({self.status})"

    @property
    def recipient_party(self) -> Party:
        """Return the recipient: whose stream `seq` counts in."""
        if self.recipient_id is not None:
            return Party.mobile(self.recipient_id)
        return Party.business(self.recipient_business_id)

    @property
    def author_party(self) -> Party:
        """Return the author."""
        if self.sender_id is not None:
            return Party.business(self.sender_id)
        return Party.mobile(self.sender_mobile_id)


class Channel(models.TextChoices):
    WEBSOCKET = "websocket"
    FCM = "fcm"
    APNS = "apns"


class Outcome(models.TextChoices):
    SENT = "sent", "written, waiting for the ack"
    ACKED = "acked"
    TIMEOUT = "timeout"
    OFFLINE = "offline"
    ERROR = "error"


class DeliveryAttempt(models.Model):
    message = models.ForeignKey(
        Message,
        on_delete=models.CASCADE,
        related_name="attempts",
        db_index=False,  # led by attempt_message_at_idx
    )
    at = models.DateTimeField()
    channel = models.CharField(max_length=12, choices=Channel.choices)
    outcome = models.CharField(max_length=12, choices=Outcome.choices)
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["message", "at"], name="attempt_message_at_idx")]

    def __str__(self) -> str:
        return f"{self.channel} {self.outcome} at {self.at:%H:%M:%S}"


class DeadLetter(models.Model):
    """A message that gave up; an operator reviews it and requeues or deletes it."""

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="dead_letter")
    reason = models.CharField(max_length=500)
    payload = models.JSONField(help_text="The message as it was when it failed.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"dead letter {self.pk}: {self.reason}"


class IdempotencyKey(models.Model):
    """A sender's Idempotency-Key, with the hash of the request it was first used for."""

    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.CASCADE)
    # A batch sent with the key: every id, in item order (`message` is the first of them).
    batch_ids = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["sender", "key"], name="idempotency_unique_sender_key")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created_idx")]

    def __str__(self) -> str:
        return f"{self.key} ({'used' if self.message_id else 'in flight'})"
