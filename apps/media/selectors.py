"""Reads for media: each principal sees only its own uploads."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import MobileUser, User
from apps.common.ids import parse_uuid

from .models import Media


def media_owned_by(principal: User | MobileUser) -> QuerySet[Media]:
    """Return the media `principal` uploaded."""
    if isinstance(principal, MobileUser):
        return Media.objects.filter(mobile_user=principal)
    return Media.objects.filter(sender=principal)


def media_get_for_owner(*, owner: User | MobileUser, media_id: object) -> Media | None:
    """Return `owner`'s media with this id, or None (also for another owner's media)."""
    pk = parse_uuid(media_id)
    if pk is None:
        return None
    return media_owned_by(owner).filter(pk=pk).first()
