"""Admin for operators: devices with filters, (de)activation and a test push; preferences."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from .backends import Verdict
from .models import DeviceToken, PushHold, PushPreferences
from .services import devices_set_active, push_test_send


@admin.register(DeviceToken)
class DeviceTokenAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "mobile_user",
        "platform",
        "short_token",
        "is_active",
        "consecutive_failures",
        "last_used_at",
        "last_error",
        "created_at",
    ]
    list_filter = ["platform", "is_active", "created_at", "last_used_at"]
    search_fields = ["token", "mobile_user__phone_number"]
    list_select_related = ["mobile_user"]
    readonly_fields = ["consecutive_failures", "last_used_at", "last_error", "created_at"]
    raw_id_fields = ["mobile_user"]
    actions = ["deactivate", "reactivate", "send_test_push"]

    @admin.display(description="token")
    def short_token(self, device: DeviceToken) -> str:
        return f"{device.token[:16]}…"

    @admin.action(description="Deactivate selected devices")
    def deactivate(self, request: HttpRequest, queryset: QuerySet[DeviceToken]) -> None:
        changed = devices_set_active(device_ids=list(queryset.values_list("pk", flat=True)), is_active=False)
        self.message_user(request, f"{changed} device(s) deactivated.", messages.SUCCESS)

    @admin.action(description="Reactivate selected devices")
    def reactivate(self, request: HttpRequest, queryset: QuerySet[DeviceToken]) -> None:
        changed = devices_set_active(device_ids=list(queryset.values_list("pk", flat=True)), is_active=True)
        self.message_user(request, f"{changed} device(s) reactivated.", messages.SUCCESS)

    @admin.action(description="Send a test push to selected devices")
    def send_test_push(self, request: HttpRequest, queryset: QuerySet[DeviceToken]) -> None:
        for device in queryset[:50]:
            result = push_test_send(device=device)
            if result.verdict == Verdict.SENT:
                self.message_user(request, f"Device {device.pk}: accepted by the provider.", messages.SUCCESS)
            else:
                self.message_user(
                    request, f"Device {device.pk}: {result.verdict.value} ({result.error}).", messages.ERROR
                )


@admin.register(PushPreferences)
class PushPreferencesAdmin(admin.ModelAdmin):
    list_display = ["mobile_user", "push_enabled", "quiet_hours_start", "quiet_hours_end", "timezone"]
    list_filter = ["push_enabled"]
    search_fields = ["mobile_user__phone_number"]
    raw_id_fields = ["mobile_user"]


@admin.register(PushHold)
class PushHoldAdmin(admin.ModelAdmin):
    list_display = ["mobile_user", "held_at"]
    search_fields = ["mobile_user__phone_number"]
    raw_id_fields = ["mobile_user"]
