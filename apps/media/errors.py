"""Domain errors of media uploads; `apps.ops.exceptions` maps each to its HTTP status.

They extend the one domain error base (apps.common.errors), which the exception handler maps.
"""

from http import HTTPStatus as status

from apps.common.errors import DomainError


class MediaError(DomainError):
    """Base of the media errors."""


class MediaNotFound(MediaError):
    status_code = status.NOT_FOUND
    code = "invalid_attachment"
    default_detail = "No unattached media of yours has this id."


class MediaNotAttachable(MediaError):
    status_code = status.CONFLICT
    code = "invalid_attachment"
    default_detail = "This media failed processing and cannot be attached."


class UnsupportedMedia(MediaError):
    status_code = status.BAD_REQUEST
    default_detail = (
        "Unsupported file type. Accepted: JPEG, PNG, GIF, WebP images; MP4, MOV, WebM video; "
        "MP3, M4A/AAC, OGG, WAV audio; PDF documents."
    )


class InvalidImage(MediaError):
    status_code = status.BAD_REQUEST
    default_detail = "The image cannot be decoded."


class MediaTooLarge(MediaError):
    status_code = status.REQUEST_ENTITY_TOO_LARGE
    default_detail = "The file is too large."


class MediaAttached(MediaError):
    status_code = status.CONFLICT
    default_detail = "This media is attached to a message and cannot be deleted."


class StorageUnavailable(MediaError):
    """503 with Retry-After: the storage's circuit breaker is open."""

    status_code = status.SERVICE_UNAVAILABLE
    default_detail = "File storage is unavailable; retry later."
    code = "storage_unavailable"
    retry_after = 30
