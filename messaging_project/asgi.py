"""ASGI entry point: HTTP through Django, WebSockets through Channels (served by daphne)."""

import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings.local")


def _django_application():
    # As django.core.asgi.get_asgi_application, with the one-hop handler (messaging_project.http).
    django.setup(set_prefix=False)
    from messaging_project.http import OneHopASGIHandler

    return OneHopASGIHandler()


django_asgi_app: ASGIHandler = _django_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from apps.realtime.auth import TokenAuthMiddleware  # noqa: E402
from apps.realtime.routing import websocket_urlpatterns  # noqa: E402
from apps.realtime.security import origin_validated  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": origin_validated(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)
