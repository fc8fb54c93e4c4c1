"""Uploaded media: images, video, audio and documents, attachable to a message by its uploader."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.accounts.models import MobileUser, User


class MediaType(models.TextChoices):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"
    DOCUMENT = "document"


class MediaStatus(models.TextChoices):
    PROCESSING = "processing", "processing (thumbnails being made)"
    READY = "ready"
    FAILED = "failed"


class ThumbnailSize(models.IntegerChoices):
    """Longest side in pixels of each thumbnail, named as in the API."""

    SMALL = 150
    MEDIUM = 300
    LARGE = 600


class Media(models.Model):
    """A stored upload. Its bytes live in the default storage under `storage_key`."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Exactly one uploader: a sender or a mobile user (like ApiToken's owner).
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="media"
    )
    mobile_user = models.ForeignKey(
        MobileUser, null=True, blank=True, on_delete=models.CASCADE, related_name="media"
    )
    media_type = models.CharField(max_length=8, choices=MediaType.choices)
    content_type = models.CharField(max_length=64, help_text="Decided from the bytes, never the name.")
    size = models.PositiveBigIntegerField(help_text="Bytes.")
    file_name = models.CharField(max_length=255, help_text="The uploader's file name, for display only.")
    storage_key = models.CharField(max_length=255, unique=True)
    status = models.CharField(max_length=12, choices=MediaStatus.choices)
    failure_reason = models.CharField(max_length=500, blank=True)
    thumbnail_small_key = models.CharField(max_length=255, blank=True)
    thumbnail_medium_key = models.CharField(max_length=255, blank=True)
    thumbnail_large_key = models.CharField(max_length=255, blank=True)
    message = models.ForeignKey(
        "messaging.Message",
        null=True,
        blank=True,
        # A message is never deleted in normal operation; if one is, its media become
        # unattached and the cleanup job removes them with their files.
        on_delete=models.SET_NULL,
        related_name="attachments",
    )
    position = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Order among the message's attachments."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "media"
        ordering = ["position", "created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(sender__isnull=False) & Q(mobile_user__isnull=True))
                | (Q(sender__isnull=True) & Q(mobile_user__isnull=False)),
                name="media_has_exactly_one_uploader",
            ),
        ]
        indexes = [
            # The cleanup job: unattached uploads, oldest first.
            models.Index(
                fields=["created_at"], condition=Q(message__isnull=True), name="media_unattached_idx"
            ),
            # The sweep that re-dispatches thumbnail work nobody picked up.
            models.Index(
                fields=["created_at"], condition=Q(status="processing"), name="media_processing_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.media_type} {self.id} ({self.status})"

    @property
    def uploader(self) -> User | MobileUser:
        return self.sender if self.sender_id else self.mobile_user

    @property
    def thumbnail_keys(self) -> dict[str, str]:
        """Return the stored thumbnails' keys by API name (empty until they are made)."""
        keys = {
            "small": self.thumbnail_small_key,
            "medium": self.thumbnail_medium_key,
            "large": self.thumbnail_large_key,
        }
        return {name: key for name, key in keys.items() if key}
