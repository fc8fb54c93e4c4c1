"""Domain errors of media uploads; `apps.ops.exceptions` maps each to its HTTP status.

They extend messaging's error base so the one exception handler knows them. A media id that
is not the caller's (or no longer attachable) is `apps.messaging.errors.MediaNotFound`.
"""

from rest_framework import status
from rest_framework.exceptions import APIException

from apps.messaging.errors import MessagingError


class UnsupportedMedia(MessagingError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = (
        "Unsupported file type. Accepted: JPEG, PNG, GIF, WebP images; MP4, MOV, WebM video; "
        "MP3, M4A/AAC, OGG, WAV audio; PDF documents."
    )


class InvalidImage(MessagingError):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "The image cannot be decoded."


class MediaTooLarge(MessagingError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The file is too large."


class MediaAttached(MessagingError):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This media is attached to a message and cannot be deleted."


class StorageUnavailable(APIException):
    """503 with Retry-After: the storage's circuit breaker is open."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "File storage is unavailable; retry later."
    default_code = "storage_unavailable"
    wait = 30
