"""JSON bodies larger than Django's DATA_UPLOAD_MAX_MEMORY_SIZE, for the bulk endpoints only.

DRF's JSONParser reads `request.body`, which Django refuses past DATA_UPLOAD_MAX_MEMORY_SIZE
(2.5 MB, right for every other endpoint). The largest valid batch (1,000 sends of 10,000
characters) is about 11 MB of JSON and a broadcast to 100,000 listed numbers up to 4 MB, so the
batch and broadcast views parse with `BulkJSONParser`, which reads the stream itself up to
BULK_JSON_MAX_BYTES. deploy/nginx/messaging.conf gives those two paths the same limit.
"""

from __future__ import annotations

import io

from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.renderers import JSONRenderer

from .errors import DomainError

BULK_JSON_MAX_BYTES = 16 * 1024 * 1024


class BodyTooLarge(DomainError):
    status_code = 413
    code = "body_too_large"
    default_detail = "The request body is too large."

    @classmethod
    def over(cls, limit: int) -> BodyTooLarge:
        return cls(f"The request body is larger than {limit:,} bytes; send fewer items per request.")


class BulkJSONParser(BaseParser):
    """JSON up to BULK_JSON_MAX_BYTES, refused with 413 from its Content-Length before reading.

    Not a JSONParser subclass on purpose: DRF would read `request.body` first (with Django's
    limit) for one.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer
    limit = BULK_JSON_MAX_BYTES

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            declared = 0
        if declared > self.limit:
            raise BodyTooLarge.over(self.limit)
        body = stream.read(self.limit + 1)
        if len(body) > self.limit:
            raise BodyTooLarge.over(self.limit)
        return JSONParser().parse(io.BytesIO(body), media_type, parser_context)
