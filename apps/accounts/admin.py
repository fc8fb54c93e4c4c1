"""Django admin for operators: senders, mobile users and API tokens (view and revoke only).

Tokens are created by the management commands and `services.token_create`, because the key is
shown once at creation; the admin never shows or edits a token's digest.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.common.phone import normalize_phone

from .models import ApiToken, MobileUser, User
from .services import SENDER_DEFAULT_PERMISSIONS


class SenderCreationForm(AdminUserCreationForm):
    class Meta(AdminUserCreationForm.Meta):
        model = User
        fields = ("username", "tier")


class SenderChangeForm(UserChangeForm):
    class Meta(UserChangeForm.Meta):
        model = User


class TokenInlineBase(admin.TabularInline):
    """The owner's tokens: recognisable by prefix, revocable by deleting, never added here."""

    model = ApiToken
    fields = ("prefix", "created_at", "last_used_at")
    readonly_fields = fields
    extra = 0
    verbose_name = "API token"
    verbose_name_plural = "API tokens (tick Delete to revoke)"

    def has_add_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False


class SenderTokenInline(TokenInlineBase):
    fk_name = "user"


class MobileUserTokenInline(TokenInlineBase):
    fk_name = "mobile_user"


@admin.register(User)
class SenderAdmin(UserAdmin):
    """Business users (senders and operators), with their tier."""

    form = SenderChangeForm
    add_form = SenderCreationForm
    list_display = ("username", "display_name", "email", "tier", "is_staff", "is_active", "date_joined")
    list_filter = ("tier", "is_staff", "is_superuser", "is_active", "groups")
    search_fields = ("username", "display_name", "first_name", "last_name", "email")
    fieldsets = (
        *UserAdmin.fieldsets,
        ("Messaging", {"fields": ("tier", "display_name")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("username", "tier", "usable_password", "password1", "password2"),
                "description": "New users get the default sender permissions (send_message, chat).",
            },
        ),
    )
    inlines = (SenderTokenInline,)

    def get_inlines(self, request: HttpRequest, obj: User | None) -> tuple:
        # A new user has no tokens yet, and tokens are never added here.
        return self.inlines if obj else ()

    def save_model(self, request: HttpRequest, obj: User, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if not change:
            # Same defaults as services.sender_create, so a sender made here can send at once.
            obj.user_permissions.add(
                *Permission.objects.filter(
                    content_type__app_label="accounts", codename__in=SENDER_DEFAULT_PERMISSIONS
                )
            )


class MobileUserForm(forms.ModelForm):
    # Longer than the stored E.164 form, so that "+1 (415) 555-0123" can be typed and normalised.
    phone_number = forms.CharField(max_length=32, help_text="E.164, e.g. +14155550123; spaces are fine.")

    class Meta:
        model = MobileUser
        fields = ("phone_number", "name", "is_active")

    def clean_phone_number(self) -> str:
        """Validate the phone number and normalise it to E.164, as the API does."""
        try:
            return normalize_phone(self.cleaned_data["phone_number"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.messages) from exc


@admin.register(MobileUser)
class MobileUserAdmin(admin.ModelAdmin):
    form = MobileUserForm
    list_display = ("phone_number", "name", "is_active", "last_seq", "created_at")
    list_filter = ("is_active",)
    search_fields = ("phone_number", "name")
    search_help_text = "Phone number (or a part of it) or name."
    fields = ("phone_number", "name", "is_active", "last_seq", "created_at")
    # last_seq is the recipient's message counter: changing it by hand would break gapless seqs.
    readonly_fields = ("last_seq", "created_at")
    inlines = (MobileUserTokenInline,)

    def get_inlines(self, request: HttpRequest, obj: MobileUser | None) -> tuple:
        return self.inlines if obj else ()

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[MobileUser], search_term: str
    ) -> tuple[QuerySet[MobileUser], bool]:
        # A full number typed with spaces or dashes still finds its user.
        try:
            return queryset.filter(phone_number=normalize_phone(search_term.strip())), False
        except ValidationError:
            return super().get_search_results(request, queryset, search_term)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """View and revoke (delete) tokens; the digest is never shown."""

    list_display = ("prefix", "owner", "owner_kind", "created_at", "last_used_at")
    list_select_related = ("user", "mobile_user")
    list_filter = (("user", admin.EmptyFieldListFilter), ("mobile_user", admin.EmptyFieldListFilter))
    search_fields = ("prefix", "user__username", "mobile_user__phone_number")
    fields = ("prefix", "owner", "owner_kind", "created_at", "last_used_at")
    readonly_fields = fields
    actions = ("delete_selected",)

    @admin.display(description="owner")
    def owner(self, obj: ApiToken) -> str:
        return str(obj.principal)

    @admin.display(description="kind")
    def owner_kind(self, obj: ApiToken) -> str:
        return "sender" if obj.user_id else "mobile user"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False
