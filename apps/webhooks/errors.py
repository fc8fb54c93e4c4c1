"""Domain errors of the webhooks app (mapped to HTTP once, in apps/ops/exceptions.py)."""

from http import HTTPStatus

from apps.common.errors import DomainError


class WebhookUrlRefused(DomainError):
    status_code = HTTPStatus.BAD_REQUEST
    code = "webhook_url_refused"
    default_detail = "This URL cannot receive webhooks."


class EndpointInactive(DomainError):
    status_code = HTTPStatus.CONFLICT
    code = "endpoint_inactive"
    default_detail = "This endpoint is inactive; activate it (PATCH is_active) first."
