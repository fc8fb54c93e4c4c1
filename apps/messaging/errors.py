"""Domain errors of messaging (apps.common.errors.DomainError: the API and the sockets map them)."""

from http import HTTPStatus as status

from apps.common.errors import DomainError
from apps.media.errors import MediaNotAttachable, MediaNotFound

__all__ = [
    "IdempotencyKeyInFlight",
    "IdempotencyKeyMismatch",
    "MediaNotAttachable",
    "MediaNotFound",
    "MessageNotCancelable",
    "MessageNotFound",
    "MessagingError",
    "RecipientNotFound",
]


class MessagingError(DomainError):
    """Base of messaging's errors."""


class RecipientNotFound(MessagingError):
    status_code = status.NOT_FOUND
    code = "recipient_inactive"
    default_detail = "No active mobile user has this phone number."


class IdempotencyKeyMismatch(MessagingError):
    status_code = status.UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used with a different request body."


class IdempotencyKeyInFlight(MessagingError):
    status_code = status.CONFLICT
    default_detail = "A request with this Idempotency-Key is still being processed; retry shortly."


class MessageNotFound(MessagingError):
    status_code = status.NOT_FOUND
    code = "not_found"
    default_detail = "No message with this id among yours."


class MessageNotCancelable(MessagingError):
    status_code = status.CONFLICT
    code = "not_cancelable"
    default_detail = "This message can no longer be canceled."
