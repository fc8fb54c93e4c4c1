"""The audit log: who did what to which object, and when. Rows are only ever added."""

from __future__ import annotations

from django.db import models


class ActorType(models.TextChoices):
    BUSINESS = "business", "business user (operator or sender)"
    MOBILE = "mobile", "mobile user"
    SYSTEM = "system", "system (no user: a command, a task, a migration)"


class AuditEntry(models.Model):
    """One recorded action.

    The actor and the object are kept as plain values, not foreign keys: the record must
    outlive what it names (an erased mobile user, a deleted dead letter) and never cascade.
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_type = models.CharField(max_length=10, choices=ActorType.choices)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_name = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")]

    def __str__(self) -> str:
        actor = f"{self.actor_type}:{self.actor_id}"
        return f"{self.at:%Y-%m-%d %H:%M:%S} {actor} {self.action} {self.object_type}:{self.object_id}"
