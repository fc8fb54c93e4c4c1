"""Device tokens of mobile users, their push preferences, and pushes held for quiet hours."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from django.db import models

from apps.accounts.models import MobileUser

TOKEN_MAX_LENGTH = 512


class Platform(models.TextChoices):
    ANDROID = "android"
    IOS = "ios"


class DeviceToken(models.Model):
    """A push token of one app install: FCM for Android, APNS for iOS."""

    mobile_user = models.ForeignKey(MobileUser, on_delete=models.CASCADE, related_name="devices")
    # Unique across the system: a token belongs to one install, and the install to whoever
    # registered it last (a shared phone changing hands).
    token = models.CharField(max_length=TOKEN_MAX_LENGTH, unique=True)
    platform = models.CharField(max_length=8, choices=Platform.choices)
    is_active = models.BooleanField(default=True)
    # Transient provider failures in a row; the third deactivates the token.
    consecutive_failures = models.PositiveSmallIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                fields=["mobile_user", "platform"],
                condition=models.Q(is_active=True),
                name="device_active_user_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{self.platform} {self.token[:12]}… ({self.mobile_user_id})"


class PushPreferences(models.Model):
    """Whether a mobile user wants pushes, and a daily quiet window in its own time zone."""

    mobile_user = models.OneToOneField(
        MobileUser, on_delete=models.CASCADE, primary_key=True, related_name="push_preferences"
    )
    push_enabled = models.BooleanField(default=True)
    quiet_hours_start = models.TimeField(null=True, blank=True)
    quiet_hours_end = models.TimeField(null=True, blank=True)
    timezone = models.CharField(max_length=64, default="UTC")

    class Meta:
        verbose_name_plural = "push preferences"

    def __str__(self) -> str:
        return f"preferences of {self.mobile_user_id}"

    def in_quiet_hours(self, at: datetime) -> bool:
        """Return whether `at` (aware) falls in the quiet window, which may span midnight."""
        start, end = self.quiet_hours_start, self.quiet_hours_end
        if start is None or end is None or start == end:
            return False
        local: time = at.astimezone(ZoneInfo(self.timezone)).time().replace(tzinfo=None)
        if start < end:
            return start <= local < end
        return local >= start or local < end

    def allows_push(self, at: datetime, *, urgent: bool = False) -> bool:
        """Return whether a push may go now; `urgent` (high priority) ignores quiet hours."""
        return self.push_enabled and (urgent or not self.in_quiet_hours(at))


class PushHold(models.Model):
    """A push withheld by quiet hours or push-off; released once a push is allowed again."""

    mobile_user = models.OneToOneField(
        MobileUser, on_delete=models.CASCADE, primary_key=True, related_name="push_hold"
    )
    held_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"push held for {self.mobile_user_id} since {self.held_at:%H:%M:%S}"
