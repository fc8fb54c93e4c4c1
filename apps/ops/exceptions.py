"""Errors as `{"detail": "...", ...field errors}` with the right status, never a 500 for input."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler
from rest_framework.views import set_rollback

from apps.common.errors import DomainError

logger = logging.getLogger(__name__)

# The database unreachable (refused, timed out, connection lost, pool exhausted: psycopg's
# PoolTimeout is an OperationalError): a dependency down, so 503 and a retry hint, never 500.
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)
DATABASE_RETRY_AFTER_SECONDS = 5


def _first_message(data) -> str:
    if isinstance(data, dict):
        for field, value in data.items():
            text = _first_message(value)
            if text:
                return text if field == "non_field_errors" else f"{field}: {text}"
    if isinstance(data, list) and data:
        return _first_message(data[0])
    return str(data) if data else ""


def exception_handler(exc, context):
    if isinstance(exc, DomainError):
        retry_after = exc.retry_after_seconds
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return Response({"detail": exc.detail}, status=exc.status_code, headers=headers)
    if isinstance(exc, DATABASE_UNAVAILABLE):
        set_rollback()
        logger.warning("database.unavailable", extra={"error": f"{exc.__class__.__name__}: {exc}"[:300]})
        return Response(
            {"detail": "The database is unavailable; retry shortly."},
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, RequestDataTooBig):
        # Past DATA_UPLOAD_MAX_MEMORY_SIZE (the bulk endpoints have their own limit,
        # apps/common/parsers.py): Django would answer an HTML 400.
        return Response(
            {"detail": f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, DjangoValidationError):
        return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(data, list):
        response.data = {"detail": _first_message(data), "errors": data}
    elif isinstance(data, dict) and "detail" not in data:
        response.data = {"detail": f"Invalid input: {_first_message(data)}", **data}
    return response
