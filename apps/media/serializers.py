"""The representation of a media object, shared by the media API, message representations
and the `message` frame's `attachments`. Every call signs fresh URLs."""

from __future__ import annotations

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers

from .models import Media, MediaStatus
from .storage import THUMBNAIL_FORMATS, signed_url

_THUMBNAIL_CONTENT_TYPES = {ext: content_type for ext, content_type in THUMBNAIL_FORMATS.values()}


def _iso(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


def thumbnails_payload(media: Media) -> dict[str, str] | None:
    """Return the thumbnails' signed URLs by name, or None until they exist."""
    keys = media.thumbnail_keys
    if media.status != MediaStatus.READY or not keys:
        return None
    return {
        name: signed_url(key, content_type=_THUMBNAIL_CONTENT_TYPES[key.rsplit(".", 1)[-1]]).url
        for name, key in keys.items()
    }


def media_payload(media: Media) -> dict:
    """Return the JSON-ready representation of `media` with URLs valid from now for 1 h."""
    link = signed_url(media.storage_key, content_type=media.content_type, file_name=media.file_name)
    return {
        "id": str(media.id),
        "media_type": media.media_type,
        "content_type": media.content_type,
        "size": media.size,
        "file_name": media.file_name,
        "status": media.status,
        "url": link.url,
        "url_expires_at": _iso(link.expires_at),
        "thumbnails": thumbnails_payload(media),
    }


def attachment_payload(media: Media) -> dict:
    """Return an entry of a message's `attachments` (SPEC.md section 3, the `message` frame)."""
    payload = media_payload(media)
    del payload["status"]
    return payload


ThumbnailsSerializer = inline_serializer(
    "Thumbnails",
    fields={
        "small": serializers.URLField(help_text="150 px"),
        "medium": serializers.URLField(help_text="300 px"),
        "large": serializers.URLField(help_text="600 px"),
    },
    allow_null=True,
)


class MediaSerializer(serializers.Serializer):
    """Documents `media_payload` for the schema; the data itself comes from `media_payload`."""

    id = serializers.UUIDField()
    media_type = serializers.CharField()
    content_type = serializers.CharField()
    size = serializers.IntegerField()
    file_name = serializers.CharField()
    status = serializers.ChoiceField(choices=MediaStatus.choices)
    url = serializers.CharField()
    url_expires_at = serializers.DateTimeField()
    thumbnails = ThumbnailsSerializer

    def to_representation(self, instance: Media) -> dict:
        return media_payload(instance)


class AttachmentSerializer(MediaSerializer):
    status = None

    def to_representation(self, instance: Media) -> dict:
        return attachment_payload(instance)
