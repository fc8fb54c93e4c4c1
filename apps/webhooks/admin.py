"""Admin for operators: endpoints (secret masked) with their failing deliveries, events, redelivery."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from . import addresses
from .models import AttemptOutcome, EventStatus, EventType, WebhookDelivery, WebhookEndpoint, WebhookEvent
from .services import events_redeliver


class FailingDeliveryInline(admin.TabularInline):
    """The endpoint's latest failed attempts (successes are not what an operator looks for)."""

    model = WebhookDelivery
    verbose_name_plural = "failing deliveries (latest 20)"
    fields = ["at", "event", "attempt", "outcome", "status_code", "error", "next_attempt_at"]
    readonly_fields = fields
    can_delete = False
    extra = 0
    max_num = 0
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[WebhookDelivery]:
        failing = super().get_queryset(request).exclude(outcome=AttemptOutcome.SUCCESS).order_by("-id")
        ids = list(failing.values_list("pk", flat=True)[:20])
        return WebhookDelivery.objects.filter(pk__in=ids).select_related("event").order_by("-id")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class WebhookEndpointForm(forms.ModelForm):
    class Meta:
        model = WebhookEndpoint
        fields = ["owner", "url", "events", "description", "is_active"]

    def clean_url(self) -> str:
        url = self.cleaned_data["url"]
        try:
            addresses.url_check(url)
        except addresses.AddressRefused as exc:
            raise forms.ValidationError(str(exc)) from exc
        return url

    def clean_events(self) -> list[str]:
        events = self.cleaned_data["events"]
        known = set(EventType.values)
        if not isinstance(events, list) or not events or not set(events) <= known:
            raise forms.ValidationError(f"{events!r}: give a non-empty list from {sorted(known)}.")
        return events


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ["id", "owner", "url", "is_active", "failing_since", "paused_until", "created_at"]
    list_filter = ["is_active", "created_at"]
    search_fields = ["url", "owner__username", "description"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    # The secret is never shown in full: only its first characters.
    fields = [
        "owner",
        "url",
        "events",
        "description",
        "is_active",
        "secret_hint",
        "created_at",
        "failing_since",
        "deactivated_at",
        "lane_until",
        "paused_until",
    ]
    readonly_fields = [
        "secret_hint",
        "created_at",
        "failing_since",
        "deactivated_at",
        "lane_until",
        "paused_until",
    ]
    inlines = [FailingDeliveryInline]

    @admin.display(description="secret")
    def secret_hint(self, endpoint: WebhookEndpoint) -> str:
        return endpoint.secret_hint


class FailingFilter(admin.SimpleListFilter):
    title = "failing"
    parameter_name = "failing"

    def lookups(self, request, model_admin):
        return [("yes", "Failed at least once")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(attempts__gt=0).exclude(status=EventStatus.DELIVERED)
        return queryset


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    list_display = ["event_id", "endpoint", "type", "status", "attempts", "next_attempt_at", "created_at"]
    list_filter = ["status", "type", FailingFilter, "created_at"]
    search_fields = ["=event_id", "endpoint__url"]
    list_select_related = ["endpoint"]
    readonly_fields = [
        "event_id",
        "endpoint",
        "type",
        "payload",
        "recipient_id",
        "status",
        "attempts",
        "next_attempt_at",
        "created_at",
        "delivered_at",
    ]
    actions = ["redeliver"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Redeliver selected events (once more, now)")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookEvent]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        count = events_redeliver(event_ids=ids)
        level = messages.SUCCESS if count == len(ids) else messages.WARNING
        self.message_user(
            request, f"{count} of {len(ids)} event(s) set to go again (inactive endpoints skipped).", level
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "endpoint", "event", "attempt", "outcome", "status_code", "error", "at"]
    list_filter = ["outcome", "at"]
    search_fields = ["=event__event_id", "endpoint__url"]
    list_select_related = ["endpoint", "event"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
