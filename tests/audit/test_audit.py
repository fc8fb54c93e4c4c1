"""The audit log: requeue, delete and erase, permission changes and exports leave a row; rows are
append-only in the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEntry
from apps.audit.services import audit_record
from apps.messaging.models import DeadLetter
from tests.factories import SenderFactory
from tests.messaging.test_admin import make_dead_letter

DEAD_LETTERS_API = "/api/v1/dead-letters/"
DEAD_LETTERS_ADMIN = reverse("admin:messaging_deadletter_changelist")


def perm(codename: str) -> Permission:
    return Permission.objects.get(content_type__app_label="accounts", codename=codename)


@pytest.fixture
def superuser_client(db):
    user = SenderFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return user, client


def test_api_requeue_and_delete_are_recorded_with_the_operator(operator_client, operator, redis):
    requeued = make_dead_letter(sender=operator)
    deleted = make_dead_letter(sender=operator)

    assert operator_client.post(f"{DEAD_LETTERS_API}{requeued.pk}/requeue/").status_code == 202
    assert operator_client.delete(f"{DEAD_LETTERS_API}{deleted.pk}/").status_code == 204

    requeue = AuditEntry.objects.get(action="dead_letter.requeue")
    assert (requeue.actor_type, requeue.actor_id, requeue.actor_name) == (
        "business",
        operator.pk,
        operator.username,
    )
    assert requeue.details == {"message_ids": [str(requeued.message_id)], "via": "api"}
    delete = AuditEntry.objects.get(action="dead_letter.delete")
    assert delete.object_id == str(deleted.pk)
    assert delete.details["message_ids"] == [str(deleted.message_id)]


def test_api_refusals_record_nothing(sender_client, sender, redis):
    dead_letter = make_dead_letter(sender=sender)
    assert sender_client.post(f"{DEAD_LETTERS_API}{dead_letter.pk}/requeue/").status_code == 403
    assert sender_client.delete(f"{DEAD_LETTERS_API}{dead_letter.pk}/").status_code == 403
    assert not AuditEntry.objects.filter(action__startswith="dead_letter.").exists()


def test_admin_bulk_requeue_and_delete_are_recorded(superuser_client, redis):
    user, client = superuser_client
    to_requeue = [make_dead_letter(), make_dead_letter()]
    to_delete = [make_dead_letter(), make_dead_letter()]

    client.post(
        DEAD_LETTERS_ADMIN,
        {"action": "requeue_selected", "_selected_action": [str(d.pk) for d in to_requeue], "index": "0"},
    )
    client.post(
        DEAD_LETTERS_ADMIN,
        {"action": "delete_selected", "_selected_action": [str(d.pk) for d in to_delete], "post": "yes"},
    )

    requeue = AuditEntry.objects.get(action="dead_letter.requeue")
    assert requeue.actor_id == user.pk and requeue.details["via"] == "admin"
    assert set(requeue.details["message_ids"]) == {str(d.message_id) for d in to_requeue}
    delete = AuditEntry.objects.get(action="dead_letter.delete")
    assert set(delete.details["dead_letter_ids"]) == {d.pk for d in to_delete}
    assert not DeadLetter.objects.filter(pk__in=[d.pk for d in to_delete]).exists()


def test_admin_single_delete_is_recorded(superuser_client, redis):
    user, client = superuser_client
    dead_letter = make_dead_letter()
    client.post(reverse("admin:messaging_deadletter_delete", args=[dead_letter.pk]), {"post": "yes"})

    entry = AuditEntry.objects.get(action="dead_letter.delete")
    assert entry.object_id == str(dead_letter.pk) and entry.actor_id == user.pk


def test_permission_changes_in_the_admin_are_recorded_with_who_made_them(superuser_client):
    admin_user, client = superuser_client
    target = SenderFactory()
    AuditEntry.objects.all().delete()  # the factory's own grants (a system change)
    url = reverse("admin:accounts_user_change", args=[target.pk])
    page = client.get(url)
    form = page.context["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if value is not None and name not in ("password", "user_permissions", "groups", "last_login")
    }
    data.update(
        username=target.username,
        tier=target.tier,
        date_joined_0=target.date_joined.strftime("%Y-%m-%d"),
        date_joined_1=target.date_joined.strftime("%H:%M:%S"),
        user_permissions=[perm("send_message").pk, perm("manage_dead_letters").pk],
        is_active="on",
        **{"apitoken_set-TOTAL_FORMS": "0", "apitoken_set-INITIAL_FORMS": "0"},
    )
    data.pop("date_joined", None)
    data.pop("is_staff", None)
    data.pop("is_superuser", None)
    response = client.post(url, data)
    assert response.status_code == 302, (
        response.context["adminform"].form.errors if response.context else response
    )

    entries = AuditEntry.objects.filter(action="permissions.changed", object_id=str(target.pk))
    changes = {(e.details["change"], tuple(e.details["items"])) for e in entries}
    assert ("add", ("accounts.manage_dead_letters",)) in changes
    assert ("remove", ("accounts.chat",)) in changes
    assert {(e.actor_type, e.actor_id) for e in entries} == {("business", admin_user.pk)}


def test_group_membership_and_group_permission_changes_are_recorded(db):
    user = SenderFactory()
    group = Group.objects.create(name="operators")

    group.permissions.add(perm("manage_dead_letters"))
    user.groups.add(group)
    user.user_permissions.clear()

    rows = list(AuditEntry.objects.filter(action="permissions.changed").order_by("id"))
    as_tuples = [(r.object_type, r.details["field"], r.details["change"], r.details["items"]) for r in rows]
    assert ("auth.group", "permissions", "add", ["accounts.manage_dead_letters"]) in as_tuples
    assert ("accounts.user", "groups", "add", ["operators"]) in as_tuples
    assert (
        "accounts.user",
        "user_permissions",
        "clear",
        ["accounts.chat", "accounts.send_message"],
    ) in as_tuples
    assert all(r.actor_type == "system" for r in rows)


def test_the_audit_log_is_read_only_in_the_admin(superuser_client):
    _, client = superuser_client
    entry = audit_record(action="test.action", object_type="thing", object_id=1, details={"k": "v"})

    assert client.get(reverse("admin:audit_auditentry_changelist")).status_code == 200
    assert client.get(reverse("admin:audit_auditentry_change", args=[entry.pk])).status_code == 200
    assert client.get(reverse("admin:audit_auditentry_add")).status_code == 403
    assert (
        client.post(reverse("admin:audit_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code
        == 403
    )
    client.post(reverse("admin:audit_auditentry_change", args=[entry.pk]), {"action": "changed"})
    entry.refresh_from_db()
    assert entry.action == "test.action"
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
