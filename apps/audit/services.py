"""The one way to write the audit log: `audit_record`."""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from apps.accounts.models import MobileUser, User

from .models import ActorType, AuditEntry

logger = logging.getLogger(__name__)

# The user acting in the current request (set by AuditActorMiddleware), for records made by
# code that is not handed one, such as the permission-change signal.
_current_actor: contextvars.ContextVar[Any] = contextvars.ContextVar("audit_actor", default=None)


def _actor_fields(actor: User | MobileUser | None) -> dict:
    if isinstance(actor, User) and actor.pk is not None:
        return {"actor_type": ActorType.BUSINESS, "actor_id": actor.pk, "actor_name": actor.get_username()}
    if isinstance(actor, MobileUser) and actor.pk is not None:
        # The id, not the phone number: the record must not keep what an erasure removes.
        return {"actor_type": ActorType.MOBILE, "actor_id": actor.pk, "actor_name": f"mobile user {actor.pk}"}
    return {"actor_type": ActorType.SYSTEM, "actor_id": None, "actor_name": ""}


def audit_record(
    *,
    action: str,
    object_type: str,
    object_id: object = "",
    actor: User | MobileUser | None = None,
    details: dict | None = None,
) -> AuditEntry:
    """Append one entry; without `actor`, the current request's user (or the system) acted."""
    if actor is None:
        actor = current_actor()
    # Round-trip through JSON so dates and UUIDs in `details` are stored as text.
    payload = json.loads(json.dumps(details or {}, cls=DjangoJSONEncoder))
    entry = AuditEntry.objects.create(
        action=action,
        object_type=object_type,
        object_id=str(object_id)[:64],
        details=payload,
        **_actor_fields(actor),
    )
    logger.info(
        "audit.recorded",
        extra={"action": action, "object": f"{object_type}:{object_id}", "actor": entry.actor_name},
    )
    return entry


def current_actor() -> User | MobileUser | None:
    """Return the authenticated user of the current request, if any."""
    request = _current_actor.get()
    if request is None:
        return None
    user = getattr(request, "user", None)
    return user if getattr(user, "is_authenticated", False) else None


@contextmanager
def acting_request(request) -> Iterator[None]:
    """Attribute audit records made while the block runs to `request.user` (read lazily)."""
    token = _current_actor.set(request)
    try:
        yield
    finally:
        _current_actor.reset(token)
