"""Settings shared by every environment, read from the environment (names in SPEC.md section 7)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

SECRET_KEY = env("DJANGO_SECRET_KEY", default="")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "apps.accounts",
    "apps.messaging",
    "apps.realtime",
    "apps.ops",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.ops.middleware.CorrelationIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "messaging_project.urls"
ASGI_APPLICATION = "messaging_project.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# --- Redis, Celery, Channels -------------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="redis://127.0.0.1:6379/0")
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# "priority" makes the worker always look at high before default before low.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "queue_order_strategy": "priority",
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600),
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A send must answer even when the broker is down: publish once, briefly, then leave the
# message `queued` for the sweep.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            # A group send to a full channel is dropped silently; keep the buffer generous so
            # bursts and catch-ups do not lose frames (an unacked frame is retried anyway).
            "capacity": env.int("CHANNEL_LAYER_CAPACITY", default=20000),
            "expiry": 60,
        },
    },
}

# --- REST framework ----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.accounts.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "apps.messaging.pagination.PagePagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.ops.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Guaranteed business-to-mobile messaging",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Delivery (SPEC.md section 2 and 7) --------------------------------------------------
MESSAGING_ACK_TIMEOUT_SECONDS = env.float("MESSAGING_ACK_TIMEOUT_SECONDS", default=30)
MESSAGING_MAX_RETRIES = env.int("MESSAGING_MAX_RETRIES", default=6)
MESSAGING_RETRY_BASE_SECONDS = env.float("MESSAGING_RETRY_BASE_SECONDS", default=1)
MESSAGING_RETRY_MAX_SECONDS = env.float("MESSAGING_RETRY_MAX_SECONDS", default=300)
MESSAGING_ORDERING = env("MESSAGING_ORDERING", default="best_effort")
MESSAGING_BACKLOG_LIMIT = env.int("MESSAGING_BACKLOG_LIMIT", default=100_000)
PRESENCE_STALE_SECONDS = env.float("PRESENCE_STALE_SECONDS", default=60)
PRESENCE_RECORD_TTL_SECONDS = env.int("PRESENCE_RECORD_TTL_SECONDS", default=300)
PENDING_SWEEP_SECONDS = env.float("PENDING_SWEEP_SECONDS", default=5)
# How often the beat looks for timed-out acks and due retries, and for `queued` messages whose
# dispatch never happened (broker down at commit); how long a `queued` message may wait first.
MESSAGING_DUE_SWEEP_SECONDS = env.float("MESSAGING_DUE_SWEEP_SECONDS", default=1)
MESSAGING_QUEUED_SWEEP_SECONDS = env.float("MESSAGING_QUEUED_SWEEP_SECONDS", default=10)
MESSAGING_DISPATCH_GRACE_SECONDS = env.float("MESSAGING_DISPATCH_GRACE_SECONDS", default=15)
STALE_CONNECTION_SWEEP_SECONDS = env.float("STALE_CONNECTION_SWEEP_SECONDS", default=30)
MESSAGING_EXPIRY_SWEEP_SECONDS = env.float("MESSAGING_EXPIRY_SWEEP_SECONDS", default=30)
MESSAGING_SWEEP_BATCH = env.int("MESSAGING_SWEEP_BATCH", default=1000)
MESSAGING_CATCHUP_CHUNK = env.int("MESSAGING_CATCHUP_CHUNK", default=500)
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=48)
REALTIME_TICKET_TTL_SECONDS = 60

if MESSAGING_ORDERING not in ("best_effort", "strict"):
    raise environ.ImproperlyConfigured(
        f"MESSAGING_ORDERING must be best_effort or strict, not {MESSAGING_ORDERING!r}"
    )

# --- Storage and push (used by the media and push apps) ----------------------------------
STORAGE_BACKEND = env("STORAGE_BACKEND", default="filesystem")
PUSH_BACKEND = env("PUSH_BACKEND", default="log")

# --- Logging: JSON lines with the correlation id ------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"correlation": {"()": "apps.ops.logging.CorrelationIdFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(correlation_id)s",
            "rename_fields": {"asctime": "ts", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "filters": ["correlation"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "celery": {"level": "INFO"},
    },
}

# --- Celery beat: every sweep is idempotent and safe on two beats at once -----------------
# Sweeps go to the high queue so a deep low-priority backlog cannot starve them; they expire
# rather than pile up while no worker runs.
_SWEEP = {"queue": "high", "expires": 30}
CELERY_BEAT_SCHEDULE = {
    "ack-timeouts-and-retries": {
        "task": "apps.messaging.tasks.sweep_ack_timeouts",
        "schedule": MESSAGING_DUE_SWEEP_SECONDS,
        "options": _SWEEP,
    },
    "pending": {
        "task": "apps.messaging.tasks.sweep_pending",
        "schedule": PENDING_SWEEP_SECONDS,
        "options": _SWEEP,
    },
    "stuck-queued": {
        "task": "apps.messaging.tasks.sweep_queued",
        "schedule": MESSAGING_QUEUED_SWEEP_SECONDS,
        "options": _SWEEP,
    },
    "ttl-expiry": {
        "task": "apps.messaging.tasks.sweep_expired",
        "schedule": MESSAGING_EXPIRY_SWEEP_SECONDS,
        "options": _SWEEP,
    },
    "stale-connections": {
        "task": "apps.messaging.tasks.sweep_stale_connections",
        "schedule": STALE_CONNECTION_SWEEP_SECONDS,
        "options": _SWEEP,
    },
    "idempotency-keys": {
        "task": "apps.messaging.tasks.purge_idempotency_keys",
        "schedule": 3600,
        "options": {"queue": "low", "expires": 3000},
    },
}
