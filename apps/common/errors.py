"""The one base of domain errors: a code, an HTTP status and an optional retry-after, no DRF.

Services raise these; the API layer (apps/ops/exceptions.py) maps them to a response once, and
the WebSocket consumer maps them to an `error` frame once.
"""

from __future__ import annotations

import math
from http import HTTPStatus


class DomainError(Exception):
    """An error a caller can act on: `code` names it, `status_code` is its HTTP status."""

    status_code: int = HTTPStatus.BAD_REQUEST
    code: str = "invalid"
    default_detail: str = "Invalid request."
    # Seconds after which a retry may succeed (429 and 503); None when waiting does not help.
    retry_after: float | None = None

    def __init__(self, detail: str | None = None, *, retry_after: float | None = None) -> None:
        self.detail = detail or self.default_detail
        if retry_after is not None:
            self.retry_after = retry_after
        super().__init__(self.detail)

    @property
    def retry_after_seconds(self) -> int | None:
        """Return `retry_after` as the whole seconds of a Retry-After header (at least 1)."""
        return None if self.retry_after is None else max(1, math.ceil(self.retry_after))
