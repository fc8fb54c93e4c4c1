"""The processes under test and the data they need: a fresh database, senders, mobile users.

`BenchStack` is the end-to-end tests' `Stack` (tests/e2e/harness.py) with production timings
instead of the tests' shortened ones, a configurable worker concurrency and quiet logs. The
database is dropped, recreated and migrated on every run so that each run starts from the same
state; users and tokens are bulk-inserted through the ORM in this process.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.e2e.harness import BIN, FAST_TIMINGS, REPO_ROOT, Stack

PG_SERVER = "postgres://postgres@127.0.0.1:5432"
# Valid North American numbers for libphonenumber (555 exchange); 10,000 per area code
# (200,000 in all: p10 opens 20,000 idle sockets, one user each, after the fleet's).
AREA_CODES = (
    *("415", "650", "212", "310", "617", "206", "303", "512", "702", "808"),
    *("213", "305", "312", "404", "503", "602", "713", "919", "971", "984"),
)


def database_url(name: str) -> str:
    return f"{PG_SERVER}/{name}"


class BenchStack(Stack):
    """daphne, a Celery worker (`concurrency` processes) and beat with the default timings."""

    def __init__(
        self,
        *,
        database_name: str,
        workdir: Path,
        concurrency: int,
        web_processes: int,
        log_level: str,
        settings: str,
    ) -> None:
        super().__init__(database_name=database_name, workdir=workdir)
        self.web_processes = web_processes
        # Production-like: the settings' own defaults (ack timeout 30 s, sweeps every 1-30 s).
        for name in FAST_TIMINGS:
            self.env.pop(name, None)
        self.env["LOG_LEVEL"] = log_level
        self.beat_log_level = self.worker_log_level = log_level.lower()
        self.worker_concurrency = concurrency
        self.worker_name = "bench"
        # A psycopg pool per process, as production runs: without one, settings.test opens a
        # connection per request and persistent connections pile up per request thread.
        self.env["DJANGO_SETTINGS_MODULE"] = f"messaging_project.settings.{settings}"
        self.env.setdefault("DATABASE_POOL", "true")
        # As base.py's default (settings.test turns the token cache off for its unit tests).
        self.env.setdefault("AUTH_TOKEN_CACHE_SECONDS", "10")
        # p11's webhook receiver listens on 127.0.0.1 (production settings refuse that).
        self.env.setdefault("WEBHOOK_ALLOW_PRIVATE_URLS", "true")
        self.env.setdefault("DJANGO_SECRET_KEY", "bench-only-" + secrets.token_urlsafe(32))
        # One metrics directory for every process of the stack, as on a production host, so
        # that recording costs what it costs there and /metrics sums them all.
        metrics_dir = workdir / "prometheus"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        self.env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    def wait_worker_ready(self) -> None:
        """Wait for the worker's "ready." line or, failing that (log level), its answer to a ping."""
        worker = self.worker
        assert worker is not None
        last_ping = time.monotonic()

        def ready() -> bool:
            nonlocal last_ping
            if not worker.alive():
                return False
            if " ready." in worker.log_text():
                return True
            # A ping starts a Celery client (seconds of CPU): only now and then.
            if time.monotonic() - last_ping > 10:
                last_ping = time.monotonic()
                return self._worker_pings()
            return False

        self.wait(ready, timeout=90, what="the Celery worker")

    def _worker_pings(self) -> bool:
        result = subprocess.run(
            [str(BIN / "celery"), "-A", "messaging_project", "inspect", "ping", "--timeout", "2"],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return "pong" in result.stdout

    def start(self) -> BenchStack:
        """Start every process; unlike the tests' stack, do not wait for beat's INFO line."""
        self.spawn_all()
        self.wait_web_ready()
        self.wait_worker_ready()
        if not self.beat.alive():
            raise RuntimeError(f"celery beat exited\n{self.diagnostics()}")
        return self


def recreate_database(name: str) -> None:
    """Drop (closing its sessions) and create the benchmark's database, then migrate it."""
    if not name.startswith("bench"):
        raise ValueError(f"refusing to drop {name!r}: the benchmark's database name starts with 'bench'")
    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "messaging_project.settings.test",
        "DATABASE_URL": database_url(name),
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
    )


def configure_django(*, database_name: str, redis_url: str) -> None:
    """Set up Django in this process against the benchmark's database and the stack's Redis."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "messaging_project.settings.test"
    os.environ["DATABASE_URL"] = database_url(database_name)
    os.environ["REDIS_URL"] = redis_url
    os.environ.pop("CELERY_BROKER_URL", None)
    import django

    django.setup()


@dataclass(frozen=True)
class Mobile:
    id: int
    phone: str
    token: str


def phone_number(n: int) -> str:
    """Return the n-th benchmark phone number (E.164, valid for libphonenumber)."""
    area, rest = divmod(n, 10_000)
    return f"+1{AREA_CODES[area]}555{rest:04d}"


def senders_create(count: int) -> list[str]:
    """Create `count` enterprise senders allowed to broadcast; return their tokens."""
    from apps.accounts.models import Tier
    from apps.accounts.services import sender_create, token_create

    tokens = []
    for n in range(count):
        user = sender_create(
            username=f"bench-sender-{n}", tier=Tier.ENTERPRISE, permissions=("send_broadcast",)
        )
        user.display_name = f"Bench sender {n}"
        user.save(update_fields=["display_name"])
        tokens.append(token_create(owner=user))
    return tokens


def mobiles_create(start: int, count: int) -> list[Mobile]:
    """Bulk-insert `count` mobile users (numbers from index `start`) with one token each."""
    from apps.accounts.models import ApiToken, MobileUser
    from apps.common.phone import normalize_phone

    if start + count > len(AREA_CODES) * 10_000:
        raise ValueError(f"at most {len(AREA_CODES) * 10_000} benchmark mobile users")
    # normalize_phone: stored numbers must be exactly what the API's normalisation produces.
    phones = [normalize_phone(phone_number(n)) for n in range(start, start + count)]
    users = MobileUser.objects.bulk_create(
        [MobileUser(phone_number=p, name=f"Bench {p[-6:]}") for p in phones], batch_size=2000
    )
    keys = [secrets.token_urlsafe(32) for _ in users]
    ApiToken.objects.bulk_create(
        [
            ApiToken(digest=ApiToken.digest_of(key), prefix=key[:8], mobile_user=user)
            for user, key in zip(users, keys, strict=True)
        ],
        batch_size=2000,
    )
    return [Mobile(u.pk, u.phone_number, key) for u, key in zip(users, keys, strict=True)]


def backlog_create(*, recipient: Mobile, sender_username: str, count: int) -> None:
    """Store `count` pending messages for an offline recipient, seq 1..count, as delivery would.

    The state is what delivery (`messages_deliver_chunk`) leaves for an offline recipient
    (pending, due as soon as it connects, one `offline` attempt each); inserting it directly
    keeps the phase short.
    """
    from django.db import transaction
    from django.utils import timezone

    from apps.accounts.models import MobileUser, User
    from apps.messaging.models import Channel, DeliveryAttempt, Message, Outcome, Status

    sender = User.objects.get(username=sender_username)
    now = timezone.now()
    with transaction.atomic():
        messages = Message.objects.bulk_create(
            [
                Message(
                    sender=sender,
                    recipient_id=recipient.id,
                    seq=seq,
                    content=f"bench catch-up {seq}",
                    status=Status.PENDING,
                    next_attempt_at=None,
                )
                for seq in range(1, count + 1)
            ],
            batch_size=2000,
        )
        DeliveryAttempt.objects.bulk_create(
            [
                DeliveryAttempt(
                    message=m, at=now, channel=Channel.WEBSOCKET, outcome=Outcome.OFFLINE, error="offline"
                )
                for m in messages
            ],
            batch_size=2000,
        )
        MobileUser.objects.filter(pk=recipient.id).update(last_seq=count)
