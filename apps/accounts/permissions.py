"""Permissions by kind of principal and by the spec's permission names."""

from rest_framework.permissions import BasePermission

from .models import MobileUser, User


class IsSender(BasePermission):
    message = "Only senders (business users) can do this."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, User)


class IsMobileUser(BasePermission):
    message = "Only mobile users can do this."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, MobileUser)


def sender_permission(codename: str) -> type[BasePermission]:
    """Return a permission class requiring a sender holding `accounts.<codename>`."""

    class HasSenderPermission(BasePermission):
        message = f"You need the '{codename}' permission."

        def has_permission(self, request, view) -> bool:
            user = request.user
            return isinstance(user, User) and user.has_perm(f"accounts.{codename}")

    HasSenderPermission.__name__ = f"Has_{codename}"
    return HasSenderPermission


CanSendMessage = sender_permission("send_message")
CanManageDeadLetters = sender_permission("manage_dead_letters")
