"""Domain errors of messaging; the API layer maps each to its HTTP status."""

from rest_framework import status


class MessagingError(Exception):
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Invalid request."

    def __init__(self, detail: str | None = None):
        self.detail = detail or self.default_detail
        super().__init__(self.detail)


class RecipientNotFound(MessagingError):
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "No active mobile user has this phone number."


class MediaNotFound(MessagingError):
    status_code = status.HTTP_404_NOT_FOUND
    default_detail = "No unattached media of yours has this id."


class MediaNotAttachable(MessagingError):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "This media failed processing and cannot be attached."


class IdempotencyKeyMismatch(MessagingError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used with a different request body."


class IdempotencyKeyInFlight(MessagingError):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A request with this Idempotency-Key is still being processed; retry shortly."
