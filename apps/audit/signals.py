"""Permission changes, wherever they are made (admin, shell, services): m2m_changed on the
permission and group relations of users and groups."""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db.models.signals import m2m_changed

from apps.accounts.models import User

from .services import audit_record

_ACTIONS = {"post_add": "add", "post_remove": "remove", "pre_clear": "clear"}


def _names(model, pks) -> list[str]:
    if model is Permission:
        return sorted(
            f"{app}.{codename}"
            for app, codename in Permission.objects.filter(pk__in=pks).values_list(
                "content_type__app_label", "codename"
            )
        )
    return sorted(Group.objects.filter(pk__in=pks).values_list("name", flat=True))


def _on_change(sender, instance, action, reverse, model, pk_set, field: str, **kwargs) -> None:
    if action not in _ACTIONS:
        return
    if action == "pre_clear":
        # What is about to go, read before it goes (post_clear has no pk_set).
        related = getattr(instance, field) if not reverse else None
        pk_set = set(related.values_list("pk", flat=True)) if related is not None else set()
        if not pk_set:
            return
    elif not pk_set:
        return
    if reverse:
        # e.g. permission.user_set.add(user): the instance is the permission or group.
        owners = list(model.objects.filter(pk__in=pk_set))
        for owner in owners:
            audit_record(
                action="permissions.changed",
                object_type=owner._meta.label_lower,
                object_id=owner.pk,
                details={
                    "field": field,
                    "change": _ACTIONS[action],
                    "items": _names(type(instance), [instance.pk]),
                },
            )
        return
    audit_record(
        action="permissions.changed",
        object_type=instance._meta.label_lower,
        object_id=instance.pk,
        details={"field": field, "change": _ACTIONS[action], "items": _names(model, pk_set)},
    )


def _receiver(field: str):
    def receiver(**kwargs) -> None:
        _on_change(field=field, **kwargs)

    return receiver


_receivers = {
    "user_permissions": (User.user_permissions.through, _receiver("user_permissions")),
    "groups": (User.groups.through, _receiver("groups")),
    "permissions": (Group.permissions.through, _receiver("permissions")),
}


def connect() -> None:
    """Listen to every relation that grants a permission (idempotent)."""
    for field, (through, receiver) in _receivers.items():
        m2m_changed.connect(receiver, sender=through, dispatch_uid=f"audit.permissions.{field}")
