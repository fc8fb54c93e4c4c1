"""Settings shared by every environment, read from the environment (names in SPEC.md section 7)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

# Prometheus multiprocess mode: every process of a host writes its samples here and /metrics
# sums them (apps/common/metrics.py). Each environment's settings hand it to
# apps.common.multiproc.metrics_directory_use, before anything imports prometheus_client.
PROMETHEUS_MULTIPROC_DIR = env("PROMETHEUS_MULTIPROC_DIR", default=str(BASE_DIR / ".run" / "prometheus"))

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
    "apps.conversations",
    "apps.realtime",
    "apps.ops",
    "apps.media",
    "apps.devices",
    "apps.audit",
    "apps.privacy",
    "apps.webhooks",
]

MIDDLEWARE = [
    # First, so that it times the whole chain and sees the status the client gets.
    "apps.ops.metrics_middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.ops.middleware.CorrelationIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "apps.audit.middleware.AuditActorMiddleware",
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


def with_connection_pool(database: dict) -> dict:
    """Give a PostgreSQL database a psycopg connection pool (DATABASE_POOL, on by default).

    Under ASGI every HTTP request runs in a thread of its own, so persistent per-thread
    connections pile up and fresh ones cost a PostgreSQL process each; a pool per process
    bounds and reuses them. Pooling replaces CONN_MAX_AGE, which must then be 0.
    """
    if database["ENGINE"] != "django.db.backends.postgresql" or not env.bool("DATABASE_POOL", default=True):
        return database
    database["CONN_MAX_AGE"] = 0
    database.setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=1),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
        # How long a request waits for a connection. Web threads never outnumber the pool, so
        # this is only reached when the database is unreachable: the request then fails fast
        # (503 with Retry-After, apps/ops/exceptions.py) instead of hanging.
        "timeout": env.float("DATABASE_POOL_TIMEOUT", default=1),
        # The pool retries a lost database with a doubling delay for this long, then starts
        # over with the next request: a database back after a long outage is used again within
        # seconds, not after a backoff of minutes.
        "reconnect_timeout": env.float("DATABASE_POOL_RECONNECT_TIMEOUT", default=5),
    }
    return database


def with_connect_timeout(database: dict) -> dict:
    """Bound how long PostgreSQL may leave a connection without an answer, libpq's own options.

    `connect_timeout` (DATABASE_CONNECT_TIMEOUT, 2 s): a database host that accepts and never
    answers (a blackholed network) would hold a connection attempt for the kernel's TCP timeout,
    minutes. `tcp_user_timeout` (DATABASE_TCP_USER_TIMEOUT, 3 s) with keepalives: a connection
    already established whose packets stop being acknowledged (the network or host went away
    mid-query) is dropped by the kernel after that long, whether the query is still being sent
    (its data unacknowledged) or its answer awaited (keepalive probes unacknowledged), and the
    request fails with OperationalError (503) instead of waiting up to 15 minutes for TCP's
    retransmissions to give up. A busy server does not trip it: its kernel acknowledges
    whatever its backend has not yet read.
    """
    if database["ENGINE"] == "django.db.backends.postgresql":
        user_timeout = env.float("DATABASE_TCP_USER_TIMEOUT", default=3)
        options = database.setdefault("OPTIONS", {})
        options.setdefault("connect_timeout", env.int("DATABASE_CONNECT_TIMEOUT", default=2))
        if user_timeout > 0:
            options.setdefault("tcp_user_timeout", int(user_timeout * 1000))
            options.setdefault("keepalives", 1)
            # The first probe after this long without a packet from the server, then one a
            # second; with tcp_user_timeout set, the kernel drops the connection once it has
            # heard nothing for that long and a probe is unanswered.
            options.setdefault("keepalives_idle", max(1, int(user_timeout) // 2))
            options.setdefault("keepalives_interval", 1)
            options.setdefault("keepalives_count", max(1, int(user_timeout)))
    return database


DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DATABASE_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded database of local runs: a write transaction takes the file's write lock when
    # it begins, so the read-then-update steps (relay claims, transitions) cannot interleave
    # between the web, worker and beat processes, and waits for the lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {}).update(transaction_mode="IMMEDIATE", timeout=20)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"] = with_connect_timeout(with_connection_pool(DATABASES["default"]))
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
# Webhook deliveries wait on other people's servers: their own queue (messaging_project/celery.py).
CELERY_TASK_ROUTES = {"apps.webhooks.tasks.*": {"queue": "webhooks"}}
# Celery's Django fixup closes every database connection before and after each task, and with
# a connection pool it closes the whole pool: each task paid a new PostgreSQL connection (a
# worker delivered 59 single-message tasks/s). It now does so only every this many tasks;
# messaging_project/celery.py gives each task Django's per-request connection hygiene instead.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)

# A send to a Redis that hangs fails after this long (and counts against the layer's breaker).
CHANNEL_LAYER_SOCKET_TIMEOUT = 15


def channel_layer_hosts(redis_url: str) -> list[dict]:
    """Return the channel layer's `hosts` for `redis_url`, with a safe read timeout."""
    return [{"address": redis_url, "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT}]


# channels-redis' Redis Pub/Sub layer: a web process holds one subscription connection and
# Redis pushes each event to it. The list-based RedisChannelLayer costs a web process four
# sequential round trips per event, under one lock for all its sockets (measured: 1,060
# events/s and 0.87 ms of CPU each on this machine, against 5,000/s and 0.19 ms), and
# that lock, not the CPU, held delivery to about 400 messages/s. Pub/Sub keeps nothing for a
# process that is not listening; nothing here relies on the layer for that: a frame that
# never reaches its socket is never acked, and the ack timeout sends it again.
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": channel_layer_hosts(REDIS_URL)},
    },
}

# --- REST framework ----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps.accounts.authentication.TokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "apps.common.pagination.PagePagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "apps.ops.exceptions.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Errors of a list serializer keyed by item index (DRF 3.20's default; the list form is
    # deprecated).
    "LIST_SERIALIZER_ERRORS_AS_DICT": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Guaranteed business-to-mobile messaging",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Request bodies get components of their own, so that what validation refuses (blank
    # strings, empty lists) is documented as refused rather than only in responses.
    "COMPONENT_SPLIT_REQUEST": True,
    # Who may call each operation (tags) and how ids flow between operations (links).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps.ops.schema.audience_tags",
        "apps.ops.schema.id_links",
        "apps.ops.schema.request_examples",
        "apps.ops.schema.json_request_bodies",
    ],
}

# --- Delivery (SPEC.md section 2 and 7) --------------------------------------------------
MESSAGING_ACK_TIMEOUT_SECONDS = env.float("MESSAGING_ACK_TIMEOUT_SECONDS", default=30)
MESSAGING_MAX_RETRIES = env.int("MESSAGING_MAX_RETRIES", default=6)
MESSAGING_RETRY_BASE_SECONDS = env.float("MESSAGING_RETRY_BASE_SECONDS", default=1)
MESSAGING_RETRY_MAX_SECONDS = env.float("MESSAGING_RETRY_MAX_SECONDS", default=300)
MESSAGING_ORDERING = env("MESSAGING_ORDERING", default="best_effort")
# Shifts this process's local clock (the fault tests skew a process with it); due times are
# compared on the shared Redis clock all the same (apps/common/clock.py).
MESSAGING_CLOCK_OFFSET_SECONDS = env.float("MESSAGING_CLOCK_OFFSET_SECONDS", default=0)
MESSAGING_BACKLOG_LIMIT = env.int("MESSAGING_BACKLOG_LIMIT", default=100_000)
PRESENCE_STALE_SECONDS = env.float("PRESENCE_STALE_SECONDS", default=60)
PRESENCE_RECORD_TTL_SECONDS = env.int("PRESENCE_RECORD_TTL_SECONDS", default=300)
PENDING_SWEEP_SECONDS = env.float("PENDING_SWEEP_SECONDS", default=5)
# How often the beat looks for timed-out acks and due retries.
MESSAGING_DUE_SWEEP_SECONDS = env.float("MESSAGING_DUE_SWEEP_SECONDS", default=1)
# The outbox relay (apps/messaging/relay.py, a thread of Celery beat): how often it looks for
# lanes with due messages without a notification (on SQLite, which has none, every 50 ms).
MESSAGING_RELAY_POLL_SECONDS = env.float("MESSAGING_RELAY_POLL_SECONDS", default=1)
# A round starts at most this often: commits within the window leave together (relay.py).
MESSAGING_RELAY_GATHER_SECONDS = env.float("MESSAGING_RELAY_GATHER_SECONDS", default=0.02)
# Also run a relay round in the committing thread after each send (the unit tests do, to see
# the delivery task as soon as the send returns).
MESSAGING_RELAY_ON_COMMIT = env.bool("MESSAGING_RELAY_ON_COMMIT", default=False)
STALE_CONNECTION_SWEEP_SECONDS = env.float("STALE_CONNECTION_SWEEP_SECONDS", default=30)
MESSAGING_EXPIRY_SWEEP_SECONDS = env.float("MESSAGING_EXPIRY_SWEEP_SECONDS", default=30)
MESSAGING_SWEEP_BATCH = env.int("MESSAGING_SWEEP_BATCH", default=1000)
# Messages a reconnect catch-up claims per query: `make bench` p5 (10,000 pending) took 2.2-2.3 s
# to all frames with 500, 1.9-2.0 s with 1,000, 2.1 s with 2,000. At most REALTIME_FRAME_BURST,
# so a client acking a chunk frame by frame is never rate-limited.
MESSAGING_CATCHUP_CHUNK = env.int("MESSAGING_CATCHUP_CHUNK", default=1000)
IDEMPOTENCY_KEY_TTL_HOURS = env.int("IDEMPOTENCY_KEY_TTL_HOURS", default=48)
# Data protection (SPEC.md section 10): terminal messages older than this are purged daily.
MESSAGING_RETENTION_DAYS = env.int("MESSAGING_RETENTION_DAYS", default=90)
REALTIME_TICKET_TTL_SECONDS = 60
# Each process remembers a token's owner (with its permissions) this long: revocation and
# permission changes take up to this long to apply; 0 looks every token up on every request.
AUTH_TOKEN_CACHE_SECONDS = env.float("AUTH_TOKEN_CACHE_SECONDS", default=1)

# --- WebSocket frames (apps/realtime/consumers.py) --------------------------------------
# The largest frame a client may send: a chat.send of 10,000 characters fits even with every
# character escaped as a JSON surrogate pair. A larger one gets a `frame_too_large` error; daphne
# drops the connection past 4 times this, unbuffered (messaging_project/web.py reads it too).
REALTIME_MAX_FRAME_BYTES = env.int("REALTIME_MAX_FRAME_BYTES", default=128 * 1024)
# Frames a connection may send: a bucket of REALTIME_FRAME_BURST refilled at this rate a second.
# A frame past it is dropped with a `rate_limited` error; REALTIME_FLOOD_CLOSE_AFTER drops within
# 10 s close the connection with 4429. Generous: a client acking each message of a catch-up
# one frame at a time still fits a burst.
REALTIME_FRAMES_PER_SECOND = env.float("REALTIME_FRAMES_PER_SECOND", default=200)
REALTIME_FRAME_BURST = env.int("REALTIME_FRAME_BURST", default=1000)
REALTIME_FLOOD_CLOSE_AFTER = env.int("REALTIME_FLOOD_CLOSE_AFTER", default=100)
if REALTIME_FRAMES_PER_SECOND <= 0 or REALTIME_FRAME_BURST < 1 or REALTIME_FLOOD_CLOSE_AFTER < 1:
    raise environ.ImproperlyConfigured(
        "REALTIME_FRAMES_PER_SECOND must be > 0, REALTIME_FRAME_BURST and REALTIME_FLOOD_CLOSE_AFTER >= 1"
    )

# --- HTTP serving (messaging_project/http.py) ----------------------------------------------
# Threads each web process runs requests on (at most one database connection each), and the
# requests it holds at most before answering more with 503 and Retry-After. By default no more
# than it has threads: a request beyond them would only wait for one, and under overload the
# accepted ones' latency is in-flight / throughput (32 per process: accepted p95 1.2 s in
# `make bench` p9; 16: 0.56 s, with the same accepted rate).
WEB_THREADS = env.int("WEB_THREADS", default=16)
WEB_MAX_IN_FLIGHT = env.int("WEB_MAX_IN_FLIGHT", default=WEB_THREADS)

# --- Pages for people (apps/ops/views.py) --------------------------------------------------
# The client simulator `/simulator/` (a browser page acting as a mobile app): local runs only
# unless asked; 404 when off.
SIMULATOR_ENABLED = env.bool("SIMULATOR_ENABLED", default=False)
# The ops dashboard `/ops/` polls this often, and one computation of its figures serves every
# viewer of a host for this long (SPEC.md section 9: at most 2 s).
OPS_DASHBOARD_INTERVAL_SECONDS = env.float("OPS_DASHBOARD_INTERVAL_SECONDS", default=1)
if not 0 < OPS_DASHBOARD_INTERVAL_SECONDS <= 2:
    raise environ.ImproperlyConfigured("OPS_DASHBOARD_INTERVAL_SECONDS must be in (0, 2]")

# --- Flow control (SPEC.md section 4) ------------------------------------------------------
# Per-tier send limits are fixed by the spec (apps/messaging/flow.py); this switch exists for
# load tests that must measure the pipeline rather than the limiter.
MESSAGING_RATE_LIMITS_ENABLED = env.bool("MESSAGING_RATE_LIMITS_ENABLED", default=True)
# Mobile users have no tier: their chat sends (REST and socket) count against these.
MESSAGING_MOBILE_SENDS_PER_MINUTE = env.int("MESSAGING_MOBILE_SENDS_PER_MINUTE", default=100)
MESSAGING_MOBILE_SENDS_PER_HOUR = env.int("MESSAGING_MOBILE_SENDS_PER_HOUR", default=1_000)
# Every send checks the backlog; each process recounts it at most this often.
MESSAGING_BACKLOG_CACHE_SECONDS = env.float("MESSAGING_BACKLOG_CACHE_SECONDS", default=1)
# Messages per delivery task (batch and broadcast), recipients per broadcast expansion task.
MESSAGING_DELIVERY_CHUNK = env.int("MESSAGING_DELIVERY_CHUNK", default=1000)
MESSAGING_BROADCAST_CHUNK = env.int("MESSAGING_BROADCAST_CHUNK", default=1000)
BROADCAST_SWEEP_SECONDS = env.float("BROADCAST_SWEEP_SECONDS", default=30)
CIRCUIT_BREAKER_FAILURE_RATIO = env.float("CIRCUIT_BREAKER_FAILURE_RATIO", default=0.5)
CIRCUIT_BREAKER_WINDOW = env.int("CIRCUIT_BREAKER_WINDOW", default=10)
CIRCUIT_BREAKER_MIN_CALLS = env.int("CIRCUIT_BREAKER_MIN_CALLS", default=10)
CIRCUIT_BREAKER_RESET_SECONDS = env.float("CIRCUIT_BREAKER_RESET_SECONDS", default=30)

if MESSAGING_ORDERING not in ("best_effort", "strict"):
    raise environ.ImproperlyConfigured(
        f"MESSAGING_ORDERING must be best_effort or strict, not {MESSAGING_ORDERING!r}"
    )

# --- Storage (used by the media app) -------------------------------------------------------
STORAGE_BACKEND = env("STORAGE_BACKEND", default="filesystem")

# --- Push (SPEC.md section 5; apps/devices) ------------------------------------------------
# `log` writes what it would send; `live` sends through FCM (Android) and APNS (iOS).
PUSH_BACKEND = env("PUSH_BACKEND", default="log")
if PUSH_BACKEND not in ("log", "live"):
    raise environ.ImproperlyConfigured(f"PUSH_BACKEND must be log or live, not {PUSH_BACKEND!r}")
# FCM: a service-account JSON; the endpoint is Google's unless pointed at a test server.
FCM_CREDENTIALS_FILE = env("FCM_CREDENTIALS_FILE", default="")
FCM_ENDPOINT_URL = env("FCM_ENDPOINT_URL", default="https://fcm.googleapis.com")
# APNS: token-based auth (.p8 key). APNS_ENDPOINT is host:port, empty for Apple's (sandbox or
# production); APNS_CA_FILE trusts a private CA instead of the system's.
APNS_KEY_FILE = env("APNS_KEY_FILE", default="")
APNS_KEY_ID = env("APNS_KEY_ID", default="")
APNS_TEAM_ID = env("APNS_TEAM_ID", default="")
APNS_TOPIC = env("APNS_TOPIC", default="")
APNS_USE_SANDBOX = env.bool("APNS_USE_SANDBOX", default=False)
APNS_ENDPOINT = env("APNS_ENDPOINT", default="")
APNS_CA_FILE = env("APNS_CA_FILE", default="")
if PUSH_BACKEND == "live" and not (FCM_CREDENTIALS_FILE or APNS_KEY_FILE):
    raise environ.ImproperlyConfigured("PUSH_BACKEND=live needs FCM_CREDENTIALS_FILE or APNS_KEY_FILE")
# At most one push per recipient per window, carrying the newest message and the count.
PUSH_COALESCE_SECONDS = env.float("PUSH_COALESCE_SECONDS", default=10)
PUSH_SEND_TIMEOUT_SECONDS = env.float("PUSH_SEND_TIMEOUT_SECONDS", default=10)
# How often held pushes (quiet hours, push off) are looked at for release.
PUSH_HOLD_SWEEP_SECONDS = env.float("PUSH_HOLD_SWEEP_SECONDS", default=60)

# --- Media (SPEC.md section 3; apps/media) ------------------------------------------------
# Uploads are stored through the default storage: files under MEDIA_ROOT, downloaded through
# the app's signed-link view, or an S3 bucket (django-storages' AWS_* names), downloaded
# through presigned URLs. Either kind of URL is valid for MEDIA_URL_EXPIRE_SECONDS.
MEDIA_ROOT = env("MEDIA_ROOT", default=str(BASE_DIR / "media"))
MEDIA_URL = "/media/"
MEDIA_URL_EXPIRE_SECONDS = 3600
# Prefix of the filesystem backend's download links (e.g. https://api.example.com); empty
# gives links relative to the API's host.
MEDIA_DOWNLOAD_BASE_URL = env("MEDIA_DOWNLOAD_BASE_URL", default="")
if STORAGE_BACKEND == "filesystem":
    # Thumbnail keys are derived from the upload's, so a re-run of the task must overwrite.
    STORAGES["default"] = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"allow_overwrite": True},
    }
elif STORAGE_BACKEND == "s3":
    STORAGES["default"] = {"BACKEND": "storages.backends.s3.S3Storage"}
    AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", default="")
    if not AWS_STORAGE_BUCKET_NAME:
        raise environ.ImproperlyConfigured("STORAGE_BACKEND=s3 needs AWS_STORAGE_BUCKET_NAME")
    AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", default=None)
    AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", default=None)
    # Unset: boto3's own credential chain (instance role, ~/.aws, ...).
    AWS_ACCESS_KEY_ID = env("AWS_ACCESS_KEY_ID", default=None)
    AWS_SECRET_ACCESS_KEY = env("AWS_SECRET_ACCESS_KEY", default=None)
    AWS_S3_ADDRESSING_STYLE = env("AWS_S3_ADDRESSING_STYLE", default=None)
    AWS_S3_SIGNATURE_VERSION = "s3v4"
    AWS_QUERYSTRING_AUTH = True
    AWS_QUERYSTRING_EXPIRE = env.int("AWS_QUERYSTRING_EXPIRE", default=MEDIA_URL_EXPIRE_SECONDS)
    AWS_DEFAULT_ACL = None
    MEDIA_URL_EXPIRE_SECONDS = AWS_QUERYSTRING_EXPIRE
else:
    raise environ.ImproperlyConfigured(f"STORAGE_BACKEND must be filesystem or s3, not {STORAGE_BACKEND!r}")
_MB = 1024 * 1024
MEDIA_SIZE_LIMITS = {"image": 10 * _MB, "video": 50 * _MB, "audio": 20 * _MB, "document": 5 * _MB}
# Pixels of one image frame (well below Pillow's ~89 MP default), and frames of an animation.
MEDIA_IMAGE_MAX_PIXELS = env.int("MEDIA_IMAGE_MAX_PIXELS", default=24_000_000)
MEDIA_IMAGE_MAX_FRAMES = env.int("MEDIA_IMAGE_MAX_FRAMES", default=500)
MEDIA_UPLOADS_PER_MINUTE = env.int("MEDIA_UPLOADS_PER_MINUTE", default=10)
MEDIA_UNATTACHED_TTL_HOURS = env.float("MEDIA_UNATTACHED_TTL_HOURS", default=24)
MEDIA_SWEEP_SECONDS = env.float("MEDIA_SWEEP_SECONDS", default=600)
MEDIA_PROCESSING_GRACE_SECONDS = env.float("MEDIA_PROCESSING_GRACE_SECONDS", default=300)
MEDIA_CLEANUP_BATCH = env.int("MEDIA_CLEANUP_BATCH", default=500)
# Request bodies above this are spooled to disk rather than held in memory (uploads always go
# to a temporary file: apps/media/uploads.py).
FILE_UPLOAD_MAX_MEMORY_SIZE = 1 * _MB
# Media and messages both have a `status` enum: name each in the OpenAPI schema.
SPECTACULAR_SETTINGS.setdefault("ENUM_NAME_OVERRIDES", {}).update(
    StatusEnum="apps.messaging.models.Status",
    MediaStatusEnum="apps.media.models.MediaStatus",
    ConversationStatusEnum="apps.conversations.models.ConversationStatus",
    WebhookEventTypeEnum="apps.webhooks.models.EventType",
    WebhookOutcomeEnum="apps.webhooks.models.AttemptOutcome",
)

# --- Status webhooks (SPEC.md section 8; apps/webhooks) -------------------------------------
# A 2xx within the timeout is success; failures retry from the base delay, doubling, capped at
# an hour, up to the attempts limit. Private URLs (and plain http) only for local runs and tests.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10)
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=5)
WEBHOOK_RETRY_MAX_SECONDS = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=3600)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=12)
WEBHOOK_ALLOW_PRIVATE_URLS = env.bool("WEBHOOK_ALLOW_PRIVATE_URLS", default=False)
# How often beat wakes endpoints with due events (retries, lost wake-ups); events claimed per
# round; the time slice a delivery task spends on one endpoint before requeueing itself; how
# long a claimed event or a held lane waits for news from a worker (0: twice the timeout + 5 s).
WEBHOOK_SWEEP_SECONDS = env.float("WEBHOOK_SWEEP_SECONDS", default=5)
WEBHOOK_BATCH = env.int("WEBHOOK_BATCH", default=100)
WEBHOOK_SLICE_SECONDS = env.float("WEBHOOK_SLICE_SECONDS", default=1)
WEBHOOK_LEASE_SECONDS = env.float("WEBHOOK_LEASE_SECONDS", default=0)
if WEBHOOK_MAX_ATTEMPTS < 1 or WEBHOOK_TIMEOUT_SECONDS <= 0:
    raise environ.ImproperlyConfigured("WEBHOOK_MAX_ATTEMPTS must be >= 1 and WEBHOOK_TIMEOUT_SECONDS > 0")

# --- Logging: JSON lines with the correlation id ------------------------------------------
LOG_LEVEL = env("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"correlation": {"()": "apps.common.logging.CorrelationIdFilter"}},
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
        "celery": {"level": LOG_LEVEL},
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
    # Push: send the pushes held by quiet hours once the window is over.
    "push-holds": {
        "task": "apps.devices.tasks.release_push_holds",
        "schedule": PUSH_HOLD_SWEEP_SECONDS,
        "options": {"queue": "default", "expires": PUSH_HOLD_SWEEP_SECONDS},
    },
    # Broadcasts whose next expansion task was lost (broker down at commit).
    "broadcasts": {
        "task": "apps.messaging.tasks.sweep_broadcasts",
        "schedule": BROADCAST_SWEEP_SECONDS,
        "options": _SWEEP,
    },
    # Retention: purge terminal messages older than MESSAGING_RETENTION_DAYS, in chunks.
    "retention": {
        "task": "apps.privacy.tasks.purge_expired_messages",
        "schedule": 24 * 3600,
        "options": {"queue": "low", "expires": 12 * 3600},
    },
    # Retention of webhook events: settled ones older than MESSAGING_RETENTION_DAYS, in chunks.
    "webhook-retention": {
        "task": "apps.webhooks.tasks.purge_webhook_events",
        "schedule": 24 * 3600,
        "options": {"queue": "low", "expires": 12 * 3600},
    },
    # Webhooks: wake endpoints whose events are due (retries, wake-ups lost after a commit).
    "webhooks": {
        "task": "apps.webhooks.tasks.sweep_webhooks",
        "schedule": WEBHOOK_SWEEP_SECONDS,
        "options": _SWEEP,
    },
    # Media: remove uploads unattached for 24 h, re-dispatch lost thumbnail work.
    "media": {
        "task": "apps.media.tasks.sweep_media",
        "schedule": MEDIA_SWEEP_SECONDS,
        "options": {"queue": "low", "expires": MEDIA_SWEEP_SECONDS},
    },
}
