"""Test settings: PostgreSQL and Redis are real (see tests/conftest.py)."""

import atexit
import os
import shutil
import tempfile

from apps.common.multiproc import ENV as METRICS_ENV
from apps.common.multiproc import metrics_directory_use

from .base import *  # noqa: F403
from .base import env, with_connect_timeout, with_connection_pool

SECRET_KEY = env("DJANGO_SECRET_KEY", default="test-only-insecure-key")
DATABASES = {
    "default": env.db("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/messaging"),
}
DATABASES["default"]["CONN_MAX_AGE"] = 0
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # as in production: a pool checks what it hands out
DATABASES["default"] = with_connect_timeout(DATABASES["default"])
# Tests run without a pool unless asked (the benchmark asks: DATABASE_POOL=true).
if env.bool("DATABASE_POOL", default=False):
    DATABASES["default"] = with_connection_pool(DATABASES["default"])
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING["root"]["level"] = env("LOG_LEVEL", default="WARNING")  # noqa: F405

# Redis database 15 by default, so tests never touch a local run's data (database 0).
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/15")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = channel_layer_hosts(REDIS_URL)  # noqa: F405
# Tests opt in to the per-tier send limits (tests/messaging/test_flow.py): sender ids restart
# with each test database while Redis keeps the hour-long windows of earlier runs.
MESSAGING_RATE_LIMITS_ENABLED = env.bool("MESSAGING_RATE_LIMITS_ENABLED", default=False)
# Unit tests look at the broker right after a commit: a relay round runs in the committing
# thread. The end-to-end tests' processes leave it to beat's relay, as production does.
MESSAGING_RELAY_ON_COMMIT = env.bool("MESSAGING_RELAY_ON_COMMIT", default=True)
# Test receivers listen on 127.0.0.1; tests/webhooks/test_addresses.py turns this off.
WEBHOOK_ALLOW_PRIVATE_URLS = env.bool("WEBHOOK_ALLOW_PRIVATE_URLS", default=True)
# Tests deactivate users and revoke tokens and expect it at once (tests/accounts turns it on).
AUTH_TOKEN_CACHE_SECONDS = env.float("AUTH_TOKEN_CACHE_SECONDS", default=0)

# The simulator's tests (and the browser tests' processes) need it; tests/ops turn it off to
# check the 404.
SIMULATOR_ENABLED = env.bool("SIMULATOR_ENABLED", default=True)

# Metrics go to a temporary directory of this test run, shared with the processes it starts
# (the end-to-end stack inherits the environment); the process that made it removes it.
if env(METRICS_ENV, default=""):
    PROMETHEUS_MULTIPROC_DIR = metrics_directory_use(env(METRICS_ENV))
else:
    PROMETHEUS_MULTIPROC_DIR = metrics_directory_use(tempfile.mkdtemp(prefix="messaging-metrics-"))
    _metrics_owner = os.getpid()
    atexit.register(
        lambda: os.getpid() == _metrics_owner and shutil.rmtree(PROMETHEUS_MULTIPROC_DIR, ignore_errors=True)
    )
