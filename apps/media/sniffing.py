"""Decide what an upload is from its first bytes, never from its name or declared type.

`filetype` (pure Python, no libmagic) was chosen over `puremagic` after running both on real
files of every accepted kind: `filetype` names M4A `audio/mp4` and Ogg `audio/ogg`, where
`puremagic` ranks `video/mp4` and `application/ogg` first; both refuse to call HTML or SVG
an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import filetype
from django.conf import settings

from .models import MediaType

# Bytes `filetype` looks at; every accepted signature lies within them.
SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Kind:
    """An accepted type: what it is, how it is named on the wire and in storage."""

    media_type: str
    content_type: str
    extension: str
    pillow_format: str = ""


# Keyed by what `filetype` reports. Anything else is refused.
ACCEPTED: dict[str, Kind] = {
    "image/jpeg": Kind(MediaType.IMAGE, "image/jpeg", "jpg", "JPEG"),
    "image/png": Kind(MediaType.IMAGE, "image/png", "png", "PNG"),
    "image/gif": Kind(MediaType.IMAGE, "image/gif", "gif", "GIF"),
    "image/webp": Kind(MediaType.IMAGE, "image/webp", "webp", "WEBP"),
    "video/mp4": Kind(MediaType.VIDEO, "video/mp4", "mp4"),
    "video/quicktime": Kind(MediaType.VIDEO, "video/quicktime", "mov"),
    "video/webm": Kind(MediaType.VIDEO, "video/webm", "webm"),
    "audio/mpeg": Kind(MediaType.AUDIO, "audio/mpeg", "mp3"),
    "audio/mp4": Kind(MediaType.AUDIO, "audio/mp4", "m4a"),
    "audio/aac": Kind(MediaType.AUDIO, "audio/aac", "aac"),
    "audio/ogg": Kind(MediaType.AUDIO, "audio/ogg", "ogg"),
    "audio/x-wav": Kind(MediaType.AUDIO, "audio/wav", "wav"),
    "application/pdf": Kind(MediaType.DOCUMENT, "application/pdf", "pdf"),
}


def sniff(head: bytes) -> Kind | None:
    """Return the accepted kind the leading bytes `head` show, or None."""
    guess = filetype.guess(head)
    return ACCEPTED.get(guess.mime) if guess is not None else None


def sniff_file(file: BinaryIO) -> Kind | None:
    """Return the accepted kind of `file` (read from its start; position restored to 0)."""
    file.seek(0)
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    return sniff(head)


def size_limit(media_type: str) -> int:
    """Return the largest size in bytes accepted for `media_type`."""
    return settings.MEDIA_SIZE_LIMITS[media_type]


def largest_limit() -> int:
    """Return the largest size any upload may have (the streaming cut-off)."""
    return max(settings.MEDIA_SIZE_LIMITS.values())
