"""Django admin for operators: conversations (view, archive, close) with their latest messages.

Nothing here writes a conversation or a message directly: archive and close go through
`services.conversation_archive` / `conversation_close`, which lock the conversation row like
every other write of it, and the counters and last message are read-only.
"""

from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.text import Truncator
from django.utils.translation import ngettext

from apps.common.phone import normalize_phone
from apps.messaging.models import Message

from .errors import ConversationClosed
from .models import Conversation, ConversationStatus
from .services import conversation_archive, conversation_close

RECENT_MESSAGES = 20


class RecentMessagesFormSet(BaseInlineFormSet):
    """Limit the inline to the conversation's latest messages (its queryset is newest first)."""

    def get_queryset(self) -> QuerySet[Message]:
        # Sliced after the formset filtered it by conversation, and kept: the formset indexes
        # into it once per form, which must not run a query each time.
        if not hasattr(self, "_recent"):
            self._recent = super().get_queryset()[:RECENT_MESSAGES]
        return self._recent


class RecentMessageInline(admin.TabularInline):
    """The conversation's latest messages, newest first, read-only."""

    model = Message
    fk_name = "conversation"
    formset = RecentMessagesFormSet
    verbose_name_plural = f"latest messages (up to {RECENT_MESSAGES}, newest first)"
    fields = ("created_at", "author", "seq", "short_content", "status", "delivered_at", "read_at")
    readonly_fields = fields
    ordering = ("-created_at", "-id")
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        return super().get_queryset(request).select_related("sender", "sender_mobile")

    @admin.display(description="author")
    def author(self, obj: Message) -> str:
        return str(obj.sender or obj.sender_mobile)

    @admin.display(description="content")
    def short_content(self, obj: Message) -> str:
        return Truncator(obj.content).chars(80)

    def has_view_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return request.user.has_perm("messaging.view_message")

    def has_add_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        # Only lifecycle.transition writes a message's status; nothing else is editable either.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    """Conversations are started and written by their participants: operators view, archive, close."""

    list_display = (
        "id",
        "business",
        "mobile",
        "status",
        "last_message_at",
        "unread_business",
        "unread_mobile",
    )
    list_filter = ("status",)
    list_select_related = ("business", "mobile")
    search_fields = ("mobile__phone_number", "business__username")
    search_help_text = "Mobile phone number (E.164, or a part of it) or business username."
    show_full_result_count = False
    actions = ("archive_selected", "close_selected")
    inlines = (RecentMessageInline,)
    fields = (
        "id",
        "business",
        "mobile",
        "status",
        "created_at",
        "updated_at",
        "closed_at",
        "last_message",
        "last_message_at",
        "unread_business",
        "unread_mobile",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return super().get_queryset(request).select_related("business", "mobile", "last_message")

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Conversation], search_term: str
    ) -> tuple[QuerySet[Conversation], bool]:
        # A whole term that is a phone number matches exactly (the unique index), whatever
        # its spacing; anything else is Django's usual search over both fields.
        try:
            phone = normalize_phone(search_term.strip())
        except ValidationError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(mobile__phone_number=phone), False

    # -- permissions: view only, plus the archive and close actions

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A conversation is started by a business user through the API.
        return False

    def has_change_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        # Saving the form would write every column back, racing the counters; status moves
        # only through the actions.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Conversation | None = None) -> bool:
        # Its messages keep it (PROTECT); closing is how a conversation ends.
        return False

    def has_status_permission(self, request: HttpRequest) -> bool:
        """Return whether the user may archive and close conversations."""
        return request.user.has_perm("conversations.change_conversation")

    # -- archive and close

    def _move(
        self,
        request: HttpRequest,
        queryset: QuerySet[Conversation],
        service: Callable[..., Conversation],
        to: str,
    ) -> None:
        moved: list[Conversation] = []
        unchanged = refused = 0
        for conversation in queryset.select_related("business").order_by("pk"):
            try:
                # The operator acts on the business user's behalf: the service checks the
                # status under the conversation's row lock, as for a participant.
                after = service(conversation_id=conversation.pk, participant=conversation.business)
            except ConversationClosed:
                refused += 1
                continue
            if conversation.status == after.status:
                unchanged += 1
            else:
                moved.append(after)
        if moved:
            LogEntry.objects.log_actions(
                user_id=request.user.pk,
                queryset=Conversation.objects.filter(pk__in=[c.pk for c in moved]),
                action_flag=CHANGE,
                change_message=f"Status set to {to} from the admin.",
            )
            self.message_user(
                request,
                ngettext(
                    "%(count)d conversation is now %(status)s.",
                    "%(count)d conversations are now %(status)s.",
                    len(moved),
                )
                % {"count": len(moved), "status": to},
                messages.SUCCESS,
            )
        if unchanged:
            self.message_user(
                request,
                ngettext(
                    "%(count)d conversation was already %(status)s.",
                    "%(count)d conversations were already %(status)s.",
                    unchanged,
                )
                % {"count": unchanged, "status": to},
                messages.INFO,
            )
        if refused:
            self.message_user(
                request,
                ngettext(
                    "%(count)d conversation was not %(status)s: it is closed, and closed is final.",
                    "%(count)d conversations were not %(status)s: they are closed, and closed is final.",
                    refused,
                )
                % {"count": refused, "status": to},
                messages.WARNING,
            )

    @admin.action(description="Archive selected conversations", permissions=["status"])
    def archive_selected(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        self._move(request, queryset, conversation_archive, ConversationStatus.ARCHIVED)

    @admin.action(description="Close selected conversations (final)", permissions=["status"])
    def close_selected(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        self._move(request, queryset, conversation_close, ConversationStatus.CLOSED)
