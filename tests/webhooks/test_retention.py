"""Retention: settled webhook events older than MESSAGING_RETENTION_DAYS go, with their attempts."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.webhooks import services
from apps.webhooks.models import EventStatus, WebhookDelivery, WebhookEvent
from apps.webhooks.tasks import purge_webhook_events
from messaging_project.settings.base import CELERY_BEAT_SCHEDULE

from .conftest import endpoint_for

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def retention_90(settings):
    settings.MESSAGING_RETENTION_DAYS = 90


def _event(endpoint, *, days: float, status=EventStatus.DELIVERED, attempts: int = 1) -> WebhookEvent:
    at = timezone.now() - timedelta(days=days)
    event = WebhookEvent.objects.create(
        endpoint=endpoint, type="message.delivered", payload={"at": "x"}, created_at=at, status=status
    )
    for n in range(1, attempts + 1):
        WebhookDelivery.objects.create(event=event, endpoint=endpoint, attempt=n, outcome="failure", at=at)
    return event


def test_purge_deletes_only_old_settled_events_with_their_attempts(sender, other_sender):
    active = endpoint_for(sender, "https://hooks.example.com/a")
    inactive = endpoint_for(other_sender, "https://hooks.example.com/b", is_active=False)
    old_delivered = _event(active, days=91)
    old_given_up = _event(active, days=200, status=EventStatus.GIVEN_UP, attempts=3)
    old_waiting_for_inactive = _event(inactive, days=120, status=EventStatus.PENDING)
    old_being_retried = _event(active, days=120, status=EventStatus.PENDING)
    recent = _event(active, days=89)
    recent_given_up = _event(inactive, days=10, status=EventStatus.GIVEN_UP)

    assert services.events_purge_expired() == 3

    assert set(WebhookEvent.objects.values_list("pk", flat=True)) == {
        old_being_retried.pk,
        recent.pk,
        recent_given_up.pk,
    }
    purged = [old_delivered.pk, old_given_up.pk, old_waiting_for_inactive.pk]
    assert not WebhookDelivery.objects.filter(event_id__in=purged).exists()
    assert WebhookDelivery.objects.count() == 3  # the attempts of the three kept
    assert services.events_purge_expired() == 0  # a re-run finds nothing


def test_purge_works_in_bounded_chunks(sender, monkeypatch):
    endpoint = endpoint_for(sender, "https://hooks.example.com/a")
    for _ in range(5):
        _event(endpoint, days=100)
    chunks = []
    original = services.events_purge_chunk

    def counting(**kwargs):
        chunks.append(original(**kwargs))
        return chunks[-1]

    monkeypatch.setattr(services, "events_purge_chunk", counting)

    assert services.events_purge_expired(chunk=2) == 5
    assert chunks == [2, 2, 1]
    assert services.events_purge_expired(chunk=2, max_chunks=1) == 0
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_purges_at_once_share_the_work(sender):
    endpoint = endpoint_for(sender, "https://hooks.example.com/a")
    ids = {_event(endpoint, days=120).pk for _ in range(6)}
    cutoff = timezone.now() - timedelta(days=90)
    results: list[int] = []
    claimed, release = threading.Event(), threading.Event()

    def slow_purge():
        # Holds its claim (the first 3) until the other purge has run past it.
        with transaction.atomic():
            rows = list(
                WebhookEvent.objects.filter(pk__in=ids)
                .order_by("pk")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:3]
            )
            claimed.set()
            release.wait(10)
            WebhookEvent.objects.filter(pk__in=rows).delete()
            results.append(len(rows))
        connection.close()

    thread = threading.Thread(target=slow_purge)
    thread.start()
    assert claimed.wait(10)
    results.append(services.events_purge_chunk(cutoff=cutoff, limit=10))
    release.set()
    thread.join(10)

    assert sorted(results) == [3, 3]
    assert not WebhookEvent.objects.exists()


def test_the_daily_job_is_scheduled_and_runs_the_purge(sender):
    [entry] = [e for e in CELERY_BEAT_SCHEDULE.values() if e["task"] == purge_webhook_events.name]
    assert entry["schedule"] == 24 * 3600
    _event(endpoint_for(sender, "https://hooks.example.com/a"), days=365)

    assert purge_webhook_events.apply().get() == 1
    assert not WebhookEvent.objects.exists()
