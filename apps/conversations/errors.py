"""Domain errors of conversations; the API maps each to its HTTP status, the sockets to a code."""

from http import HTTPStatus as status

from apps.messaging.errors import MessagingError


class ConversationNotFound(MessagingError):
    status_code = status.NOT_FOUND
    default_detail = "No conversation of yours has this id."
    code = "not_found"


class ConversationClosed(MessagingError):
    status_code = status.CONFLICT
    default_detail = "This conversation is closed; it is read-only."
    code = "conversation_closed"


class OneWayNotAnswerable(MessagingError):
    status_code = status.NOT_FOUND
    default_detail = "One-way messages cannot be answered; chat happens in a conversation."
    code = "not_answerable"
