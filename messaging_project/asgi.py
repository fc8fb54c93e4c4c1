"""ASGI entry point: HTTP through Django, WebSockets through Channels (served by daphne)."""

import os

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings.local")


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler running the middleware chain and the view in one thread hop.

    Every view here is synchronous (DRF), and so are most middlewares (WhiteNoise has no async
    mode). Django's own handler then builds a mixed chain: each sync middleware method and the
    view get their own `sync_to_async` hop, 16 per request, which cost more CPU than the view.
    Run in sync mode, the whole chain is plain calls inside one hop.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)


def _django_application() -> OneHopASGIHandler:
    # As django.core.asgi.get_asgi_application, with the handler above.
    django.setup(set_prefix=False)
    return OneHopASGIHandler()


django_asgi_app = _django_application()

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
