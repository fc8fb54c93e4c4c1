"""The media beat job: unattached uploads older than 24 h go (rows, files, thumbnails); lost
thumbnail work is re-dispatched. Idempotent, and two beats never trip over each other."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.media import services, tasks
from apps.media.models import Media, MediaStatus
from apps.messaging import services as messaging

from .conftest import image_bytes, keys_in_storage, pdf_bytes, upload
from .test_thumbnails import queued_tasks


def post(client, content: bytes) -> str:
    response = client.post("/api/v1/media/", {"file": upload(content, "f")}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def age(media_id: str, *, hours: float) -> None:
    Media.objects.filter(pk=media_id).update(created_at=timezone.now() - timedelta(hours=hours))


def test_beat_schedule_runs_the_media_job(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["media"]
    assert entry["task"] == "apps.media.tasks.sweep_media"
    assert entry["schedule"] <= 3600


def test_unattached_uploads_older_than_a_day_are_removed_with_their_files(
    sender_client, sender, mobile_user, backend, request, django_capture_on_commit_callbacks
):
    old_image = post(sender_client, image_bytes("PNG", size=(400, 300)))
    tasks.make_thumbnails.apply(args=[old_image])
    old_document = post(sender_client, pdf_bytes())
    young = post(sender_client, pdf_bytes())
    attached = post(sender_client, pdf_bytes())
    messaging.message_send(
        sender=sender, recipient_phone_number=mobile_user.phone_number, content="x", attachment_ids=[attached]
    )
    for media_id in (old_image, old_document, attached):
        age(media_id, hours=25)
    age(young, hours=23)
    kept = Media.objects.filter(pk__in=[young, attached])
    kept_keys = sorted(m.storage_key for m in kept)

    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.sweep_media.apply().get() == {"removed": 2, "redispatched": 0}

    assert set(Media.objects.values_list("pk", flat=True)) == set(kept.values_list("pk", flat=True))
    assert sorted(keys_in_storage(backend, request)) == kept_keys

    # A second run finds nothing more to do.
    with django_capture_on_commit_callbacks(execute=True):
        assert services.media_cleanup_unattached() == 0
    assert sorted(keys_in_storage(backend, request)) == kept_keys


def test_cleanup_works_in_batches(sender_client, settings, django_capture_on_commit_callbacks):
    ids = [post(sender_client, pdf_bytes()) for _ in range(3)]
    for media_id in ids:
        age(media_id, hours=30)

    with django_capture_on_commit_callbacks(execute=True):
        assert services.media_cleanup_unattached(limit=2) == 2
        assert services.media_cleanup_unattached(limit=2) == 1
        assert services.media_cleanup_unattached(limit=2) == 0

    assert not Media.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_two_beats_at_once_skip_each_others_rows(sender_client, media_root):
    ids = [post(sender_client, pdf_bytes()) for _ in range(4)]
    for media_id in ids:
        age(media_id, hours=30)
    locked = threading.Event()
    release = threading.Event()

    def other_beat_holding_two_rows() -> None:
        try:
            with transaction.atomic():
                rows = list(
                    Media.objects.filter(pk__in=ids[:2]).select_for_update(skip_locked=True).order_by("pk")
                )
                assert len(rows) == 2
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=other_beat_holding_two_rows)
    thread.start()
    assert locked.wait(10)
    try:
        # Does not wait for the other beat's rows: it takes the two free ones.
        removed = services.media_cleanup_unattached()
    finally:
        release.set()
        thread.join()

    assert removed == 2
    assert {str(pk) for pk in Media.objects.values_list("pk", flat=True)} == set(ids[:2])
    assert len([p for p in media_root.rglob("*") if p.is_file()]) == 2


@pytest.mark.django_db(transaction=True)
def test_attach_waits_for_a_cleanup_holding_the_row_and_is_then_refused(sender_client, sender, mobile_user):
    media = post(sender_client, pdf_bytes())
    age(media, hours=30)
    from apps.messaging.errors import MediaNotFound

    with transaction.atomic():
        assert services.media_cleanup_unattached() == 1
        outcome = []

        def send() -> None:
            try:
                messaging.message_send(
                    sender=sender,
                    recipient_phone_number=mobile_user.phone_number,
                    content="x",
                    attachment_ids=[media],
                )
                outcome.append("sent")
            except MediaNotFound:
                outcome.append("refused")
            finally:
                connection.close()

        thread = threading.Thread(target=send)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # blocked on the cleanup's row lock
    thread.join(10)

    assert outcome == ["refused"]
    assert not Media.objects.exists()


def test_images_stuck_processing_are_redispatched(sender_client, redis, settings):
    stuck = post(sender_client, image_bytes("PNG"))
    fresh = post(sender_client, image_bytes("PNG"))
    done = post(sender_client, image_bytes("PNG"))
    tasks.make_thumbnails.apply(args=[done])
    for media_id in (stuck, done):
        Media.objects.filter(pk=media_id).update(
            created_at=timezone.now() - timedelta(seconds=settings.MEDIA_PROCESSING_GRACE_SECONDS + 1)
        )

    assert services.media_sweep_processing() == 1

    assert queued_tasks(redis) == [("apps.media.tasks.make_thumbnails", [stuck])]
    assert Media.objects.get(pk=fresh).status == MediaStatus.PROCESSING
