"""ASGI entry point of the reference project: Django's standard application."""

import os

from django.core.asgi import get_asgi_application

# The stack's environment names our settings; this project only runs with its own.
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.reference.settings"

application = get_asgi_application()
