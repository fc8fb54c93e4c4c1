"""Erasure from the admin: an action on mobile users, for operators who may delete them."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import ngettext

from apps.accounts.admin import MobileUserAdmin
from apps.accounts.models import MobileUser

from .services import ERASED_PREFIX, mobile_user_erase


class ErasableMobileUserAdmin(MobileUserAdmin):
    """The accounts app's mobile user admin, plus the erase action (registered in its place)."""

    actions = ("erase_selected",)

    def has_erase_permission(self, request: HttpRequest) -> bool:
        """Erasure removes the user's data for good: it needs the permission to delete users."""
        return request.user.is_active and request.user.has_perm("accounts.delete_mobileuser")

    @admin.action(
        description="Erase selected mobile users (their data is removed for good)", permissions=["erase"]
    )
    def erase_selected(self, request: HttpRequest, queryset: QuerySet[MobileUser]) -> None:
        # A deactivated user can still be erased; an erased one has nothing left to erase.
        users = list(queryset.exclude(phone_number__startswith=ERASED_PREFIX))
        for user in users:
            mobile_user_erase(mobile_user=user, actor=request.user)
        self.message_user(
            request,
            ngettext("Erased %(count)d mobile user.", "Erased %(count)d mobile users.", len(users))
            % {"count": len(users)},
            messages.SUCCESS,
        )


admin.site.unregister(MobileUser)
admin.site.register(MobileUser, ErasableMobileUserAdmin)
