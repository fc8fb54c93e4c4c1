"""Origin validation for WebSockets.

Browsers always send `Origin`, and that is the header cross-site WebSocket hijacking abuses, so
a present Origin must match ALLOWED_HOSTS. Native apps send none and cannot be driven by
another site, so a missing Origin is let through (Channels' own validator refuses it).
"""

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    def valid_origin(self, parsed_origin) -> bool:
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


def origin_validated(application):
    allowed = settings.ALLOWED_HOSTS if not settings.DEBUG else [*settings.ALLOWED_HOSTS, "localhost"]
    return BrowserOriginValidator(application, allowed)
