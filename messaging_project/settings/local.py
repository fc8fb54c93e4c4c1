"""Local runs (`make run`): embedded SQLite unless DATABASE_URL says otherwise, debug on."""

from apps.common.multiproc import metrics_directory_use

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env("DJANGO_SECRET_KEY", default="local-only-insecure-key-do-not-deploy")
# Webhooks may point at a receiver on this machine (http://127.0.0.1:...).
WEBHOOK_ALLOW_PRIVATE_URLS = env.bool("WEBHOOK_ALLOW_PRIVATE_URLS", default=True)
PROMETHEUS_MULTIPROC_DIR = metrics_directory_use(PROMETHEUS_MULTIPROC_DIR)  # noqa: F405
SIMULATOR_ENABLED = env.bool("SIMULATOR_ENABLED", default=True)
