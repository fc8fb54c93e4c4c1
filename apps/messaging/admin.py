"""Django admin for operators: messages (read-only) and dead letters (review, requeue, delete).

Nothing here writes `Message.status`: the message pages are view-only, and requeueing goes
through `services.dead_letters_requeue`, which moves statuses with `lifecycle.transition`.
"""

from __future__ import annotations

import json
import uuid

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import display_for_value, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import smart_split, unescape_string_literal
from django.utils.translation import ngettext

from apps.common.phone import normalize_phone

from .models import Broadcast, DeadLetter, DeliveryAttempt, Message
from .selectors import broadcast_progress, parse_uuid
from .services import dead_letters_delete, dead_letters_requeue
from .timeline import message_timeline


def search_by_message_or_phone(
    queryset: QuerySet, search_term: str, *, message_field: str, phone_field: str
) -> QuerySet:
    """Filter `queryset` to the rows whose message id or recipient phone number matches.

    A whole term that is a valid phone number (even with spaces) is matched exactly after
    normalisation to E.164, which uses the unique index; otherwise each word matches a message
    id (a UUID) exactly or a part of a phone number. Words are ORed, so an operator can paste
    several ids at once.
    """
    term = search_term.strip()
    if not term:
        return queryset
    try:
        return queryset.filter(**{phone_field: normalize_phone(term)})
    except ValidationError:
        pass
    query = Q()
    for bit in smart_split(term):
        if bit[:1] in ('"', "'") and bit[0] == bit[-1]:
            bit = unescape_string_literal(bit)
        pk = parse_uuid(bit)
        # A UUID column cannot be searched with LIKE without a full scan; exact ids only.
        query |= Q(**{message_field: pk}) if pk is not None else Q(**{f"{phone_field}__contains": bit})
    return queryset.filter(query)


# --- Messages -------------------------------------------------------------------------------


class DeliveryAttemptInline(admin.TabularInline):
    """The message's delivery attempts, oldest first, read-only."""

    model = DeliveryAttempt
    fields = ("at", "channel", "outcome", "error")
    readonly_fields = fields
    ordering = ("at", "id")
    extra = 0
    can_delete = False

    def has_view_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        # Attempts are part of the message's history: whoever may see the message sees them.
        return request.user.has_perm("messaging.view_message")

    def has_add_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Messages are created by the API and moved by the delivery pipeline: view only."""

    list_display = (
        "id",
        "recipient_phone",
        "sender",
        "kind",
        "priority",
        "status",
        "seq",
        "retry_count",
        "created_at",
    )
    list_filter = ("status", "kind", "priority")
    list_select_related = ("recipient", "sender")
    # The search itself is `search_by_message_or_phone`; this only turns the search box on.
    search_fields = ("recipient__phone_number",)
    search_help_text = "Recipient phone number (E.164, or a part of it) or message id(s)."
    # A COUNT(*) of the whole table on every page view is too slow at production volume.
    show_full_result_count = False
    inlines = (DeliveryAttemptInline,)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "kind",
                    "sender",
                    "recipient",
                    "seq",
                    "subject",
                    "content",
                    "content_type",
                    "priority",
                )
            },
        ),
        (
            "Delivery",
            {
                "fields": (
                    "status",
                    "retry_count",
                    "next_attempt_at",
                    "ttl_seconds",
                    "expires_at",
                    "failure_reason",
                    "dead_letter_link",
                    "correlation_id",
                )
            },
        ),
        ("Timestamps", {"fields": ("created_at", "sent_at", "delivered_at", "read_at", "failed_at")}),
        ("Timeline", {"fields": ("timeline",)}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    @admin.display(description="recipient phone", ordering="recipient__phone_number")
    def recipient_phone(self, obj: Message) -> str:
        return obj.recipient.phone_number

    @admin.display(description="dead letter")
    def dead_letter_link(self, obj: Message) -> SafeString | str:
        dead_letter = DeadLetter.objects.filter(message=obj).only("pk").first()
        if dead_letter is None:
            return "-"
        url = reverse("admin:messaging_deadletter_change", args=[dead_letter.pk])
        return format_html('<a href="{}">dead letter {}</a>', url, dead_letter.pk)

    @admin.display(description="timeline")
    def timeline(self, obj: Message) -> SafeString:
        """Render everything that happened to the message, oldest first (apps/messaging/timeline.py)."""
        rows = format_html_join(
            "",
            '<tr data-what="{}"><td>{}</td><td>{}</td><td>{}</td></tr>',
            ((e.what, display_for_value(e.at, "-"), e.what, e.detail or "") for e in message_timeline(obj)),
        )
        return format_html(
            '<table class="message-timeline"><thead><tr><th>At</th><th>Event</th><th>Detail</th></tr>'
            "</thead><tbody>{}</tbody></table>",
            rows,
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Message], search_term: str
    ) -> tuple[QuerySet[Message], bool]:
        results = search_by_message_or_phone(
            queryset, search_term, message_field="pk", phone_field="recipient__phone_number"
        )
        return results, False

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # A broadcast's page links to its messages.
        return lookup == "broadcast__id__exact" or super().lookup_allowed(lookup, value, request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        # Only lifecycle.transition writes a message's status; nothing else is editable either.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        # Deleting would leave a gap in the recipient's seq and lose the delivery history.
        return False


# --- Broadcasts -----------------------------------------------------------------------------


@admin.register(Broadcast)
class BroadcastAdmin(admin.ModelAdmin):
    """Broadcasts and their progress, read-only: they are created by the API and expanded by tasks.

    The list shows expansion (expanded / total, from the row); the queued / delivered / failed
    counts take one aggregate over the broadcast's messages, so only its page shows them.
    """

    list_display = ("id", "sender", "subject_or_content", "all_users", "progress", "status", "created_at")
    list_filter = ("status", "all_users", "priority")
    list_select_related = ("sender",)
    search_fields = ("sender__username", "subject")
    search_help_text = "Broadcast id, sender username or subject."
    show_full_result_count = False
    fieldsets = (
        (None, {"fields": ("id", "sender", "subject", "content", "content_type", "priority", "ttl_seconds")}),
        (
            "Progress",
            {"fields": ("status", "total", "expanded", "progress", "message_counts", "messages_link")},
        ),
        ("Audience", {"fields": ("all_users", "audience_max_id", "recipient_count")}),
        ("Times", {"fields": ("created_at", "expanded_at", "updated_at", "correlation_id")}),
    )
    readonly_fields = tuple(field for _, options in fieldsets for field in options["fields"])

    @admin.display(description="subject / content")
    def subject_or_content(self, obj: Broadcast) -> str:
        text = obj.subject or obj.content
        return text if len(text) <= 60 else text[:59] + "…"

    @admin.display(description="expanded")
    def progress(self, obj: Broadcast) -> str:
        percent = 100 * obj.expanded / obj.total if obj.total else 100
        return f"{obj.expanded} / {obj.total} ({percent:.0f} %)"

    @admin.display(description="messages by status")
    def message_counts(self, obj: Broadcast) -> SafeString:
        counts = broadcast_progress(broadcast=obj)
        return format_html(
            '<span class="broadcast-counts">queued (not yet delivered) {} · delivered {} · failed {}</span>',
            counts["queued"],
            counts["delivered"],
            counts["failed"],
        )

    @admin.display(description="messages")
    def messages_link(self, obj: Broadcast) -> SafeString:
        url = reverse("admin:messaging_message_changelist") + f"?broadcast__id__exact={obj.pk}"
        return format_html('<a href="{}">the broadcast\'s messages</a>', url)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Broadcast], search_term: str
    ) -> tuple[QuerySet[Broadcast], bool]:
        pk = parse_uuid(search_term.strip())
        if pk is not None:
            return queryset.filter(pk=pk), False
        return super().get_search_results(request, queryset, search_term)

    @admin.display(description="listed recipients")
    def recipient_count(self, obj: Broadcast) -> str:
        return "every active user" if obj.all_users else str(len(obj.recipient_ids))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Broadcast | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Broadcast | None = None) -> bool:
        # Its messages point at it (PROTECT); withdrawing one is the sender's cancel, not this.
        return False


# --- Dead letters ---------------------------------------------------------------------------


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    """Review failed messages; requeue or delete them, one at a time or in services."""

    list_display = (
        "id",
        "message_uuid",
        "recipient_phone",
        "reason",
        "retry_count",
        "message_status",
        "created_at",
    )
    list_select_related = ("message", "message__recipient")
    search_fields = ("message__recipient__phone_number",)
    search_help_text = "Recipient phone number (E.164, or a part of it) or message id(s)."
    show_full_result_count = False
    actions = ("requeue_selected", "delete_selected")
    fields = (
        "message_link",
        "recipient_phone",
        "message_status",
        "retry_count",
        "reason",
        "created_at",
        "attempt_history",
        "payload_pretty",
    )
    readonly_fields = fields
    change_form_template = "admin/messaging/deadletter/change_form.html"

    # -- permissions: the spec's manage_dead_letters (superusers have every permission)

    def has_manage_permission(self, request: HttpRequest) -> bool:
        """Return whether the user may review, requeue and delete dead letters."""
        return request.user.is_active and request.user.has_perm("accounts.manage_dead_letters")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_manage_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return self.has_manage_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        # Reason and payload are the record of what happened; requeue is its own action.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: DeadLetter | None = None) -> bool:
        return self.has_manage_permission(request)

    def has_requeue_permission(self, request: HttpRequest) -> bool:
        """Return whether the user may requeue dead letters (used by the requeue action)."""
        return self.has_manage_permission(request)

    # -- columns and fields

    @admin.display(description="message id", ordering="message_id")
    def message_uuid(self, obj: DeadLetter) -> uuid.UUID:
        return obj.message_id

    @admin.display(description="recipient phone", ordering="message__recipient__phone_number")
    def recipient_phone(self, obj: DeadLetter) -> str:
        return obj.message.recipient.phone_number

    @admin.display(description="retries", ordering="message__retry_count")
    def retry_count(self, obj: DeadLetter) -> int:
        return obj.message.retry_count

    @admin.display(description="message status", ordering="message__status")
    def message_status(self, obj: DeadLetter) -> str:
        return obj.message.get_status_display()

    @admin.display(description="message")
    def message_link(self, obj: DeadLetter) -> SafeString:
        url = reverse("admin:messaging_message_change", args=[obj.message_id])
        return format_html('<a href="{}">{}</a>', url, obj.message_id)

    @admin.display(description="attempt history")
    def attempt_history(self, obj: DeadLetter) -> SafeString | str:
        attempts = list(obj.message.attempts.order_by("at", "id"))
        if not attempts:
            return "No delivery attempt was recorded."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    display_for_value(a.at, "-"),
                    a.get_channel_display(),
                    a.get_outcome_display(),
                    a.error or "-",
                )
                for a in attempts
            ),
        )
        return format_html(
            '<table class="attempt-history"><thead><tr><th>At</th><th>Channel</th><th>Outcome</th>'
            "<th>Error</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="payload")
    def payload_pretty(self, obj: DeadLetter) -> SafeString:
        text = json.dumps(obj.payload, indent=2, sort_keys=True, ensure_ascii=False)
        return format_html('<pre class="payload">{}</pre>', text)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[DeadLetter], search_term: str
    ) -> tuple[QuerySet[DeadLetter], bool]:
        results = search_by_message_or_phone(
            queryset, search_term, message_field="message_id", phone_field="message__recipient__phone_number"
        )
        return results, False

    # -- requeue and delete

    def _requeue(self, request: HttpRequest, dead_letters: QuerySet[DeadLetter]) -> list[uuid.UUID]:
        selected = dead_letters.count()
        requeued = dead_letters_requeue(dead_letters=dead_letters, actor=request.user, via="admin")
        if requeued:
            LogEntry.objects.log_actions(
                user_id=request.user.pk,
                queryset=Message.objects.filter(pk__in=requeued),
                action_flag=CHANGE,
                change_message="Requeued from the dead letters.",
            )
            self.message_user(
                request,
                ngettext(
                    "Requeued %(count)d message: its retries were reset and it was dispatched.",
                    "Requeued %(count)d messages: their retries were reset and they were dispatched.",
                    len(requeued),
                )
                % {"count": len(requeued)},
                messages.SUCCESS,
            )
        skipped = selected - len(requeued)
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d dead letter was not requeued: its message is no longer failed.",
                    "%(count)d dead letters were not requeued: their messages are no longer failed.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )
        return requeued

    @admin.action(description="Requeue selected dead letters", permissions=["requeue"])
    def requeue_selected(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        self._requeue(request, queryset)

    def requeue_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Requeue one dead letter (the Requeue button of its page) and go back to the list."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_requeue_permission(request):
            raise PermissionDenied
        dead_letter = self.get_object(request, unquote(object_id))
        if dead_letter is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        requeued = self._requeue(request, DeadLetter.objects.filter(pk=dead_letter.pk))
        if not requeued:
            return HttpResponseRedirect(reverse("admin:messaging_deadletter_change", args=[dead_letter.pk]))
        return HttpResponseRedirect(reverse("admin:messaging_deadletter_changelist"))

    def delete_model(self, request: HttpRequest, obj: DeadLetter) -> None:
        dead_letters_delete(dead_letters=[obj], actor=request.user, via="admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[DeadLetter]) -> None:
        dead_letters_delete(dead_letters=list(queryset), actor=request.user, via="admin")

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: object) -> HttpResponse:
        response = super().response_delete(request, obj_display, obj_id)
        # Django sends users without change permission to the index; dead letters are never
        # changed, so go back to the list the operator came from instead.
        if isinstance(response, HttpResponseRedirect) and self.has_view_permission(request):
            context = {"preserved_filters": self.get_preserved_filters(request), "opts": self.opts}
            return HttpResponseRedirect(
                add_preserved_filters(context, reverse("admin:messaging_deadletter_changelist"))
            )
        return response

    def get_urls(self) -> list[URLPattern]:
        # Before the default URLs: their "<path:object_id>/" would swallow ".../requeue/".
        requeue = path(
            "<path:object_id>/requeue/",
            self.admin_site.admin_view(self.requeue_view),
            name="messaging_deadletter_requeue",
        )
        return [requeue, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "has_requeue_permission": self.has_requeue_permission(request),
        }
        return super().change_view(request, object_id, form_url, extra_context)
