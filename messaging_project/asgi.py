"""ASGI entry point: HTTP through Django, WebSockets through Channels (served by daphne)."""

import gc
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
from messaging_project import prompt_writes  # noqa: E402

# Under daphne: socket writes leave on the next loop turn, without an epoll round each.
prompt_writes.install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": origin_validated(TokenAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)

# Everything loaded by now lives as long as the process. Frozen, it is left out of the garbage
# collector's full collections, which otherwise walk it all (about 150,000 objects: 100-200 ms
# on this stack, with every thread of the process stopped) — a tail on the API's latency that no
# request caused. The same is done in the Celery processes (messaging_project/celery.py).
gc.freeze()
