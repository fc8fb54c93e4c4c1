"""Production: everything comes from the environment and missing secrets fail loudly."""

from apps.common.multiproc import metrics_directory_use

from .base import *  # noqa: F403
from .base import env, with_connect_timeout, with_connection_pool

DEBUG = False
SECRET_KEY = env("DJANGO_SECRET_KEY")
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"] = with_connect_timeout(with_connection_pool(DATABASES["default"]))
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
# A development aid (SPEC.md section 9): off in production whatever the environment says.
SIMULATOR_ENABLED = False
PROMETHEUS_MULTIPROC_DIR = metrics_directory_use(PROMETHEUS_MULTIPROC_DIR)  # noqa: F405
