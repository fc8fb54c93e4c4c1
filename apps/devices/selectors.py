"""Reads: a mobile user's devices and preferences, and what a push is about."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import MobileUser
from apps.messaging.models import Message, Priority, Status

from .models import DeviceToken, PushHold, PushPreferences


def devices_for_user(*, mobile_user: MobileUser) -> QuerySet[DeviceToken]:
    return DeviceToken.objects.filter(mobile_user=mobile_user)


def device_for_user(*, mobile_user: MobileUser, device_id: int) -> DeviceToken | None:
    """Return the caller's device `device_id`, or None (also when it is someone else's)."""
    return devices_for_user(mobile_user=mobile_user).filter(pk=device_id).first()


def active_devices(*, recipient_id: int) -> QuerySet[DeviceToken]:
    return DeviceToken.objects.filter(mobile_user_id=recipient_id, is_active=True).order_by("id")


def preferences_for(*, mobile_user_id: int) -> PushPreferences:
    """Return the user's preferences, or the defaults (unsaved) when it never set any."""
    found = PushPreferences.objects.filter(mobile_user_id=mobile_user_id).first()
    return found or PushPreferences(mobile_user_id=mobile_user_id)


def undelivered_for_push(*, recipient_id: int) -> QuerySet[Message]:
    """Return the recipient's messages waiting for it to come online, newest first."""
    return (
        Message.objects.filter(recipient_id=recipient_id, status=Status.PENDING)
        .select_related("sender")
        .order_by("-seq")
    )


def has_urgent(messages: QuerySet[Message]) -> bool:
    return messages.filter(priority=Priority.HIGH).exists()


def push_holds() -> QuerySet[PushHold]:
    return PushHold.objects.order_by("held_at")
