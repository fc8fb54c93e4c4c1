"""Thumbnails: 150/300/600 px, aspect kept, made by a task after commit; `processing` → `ready`/`failed`."""

from __future__ import annotations

import base64
import io
import json

import pytest
from django.core.files.base import ContentFile
from PIL import Image

from apps.media import services, storage, tasks
from apps.media.models import Media, MediaStatus

from .conftest import image_bytes, keys_in_storage, stored_files, upload

SIZES = {"small": 150, "medium": 300, "large": 600}


def post_image(client, content: bytes, name: str = "pic.png") -> dict:
    response = client.post("/api/v1/media/", {"file": upload(content, name)}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def read_key(key: str) -> bytes:
    with storage.storage().open(key, "rb") as file:
        return file.read()


def queued_tasks(redis, queue: str = "default") -> list[tuple[str, list]]:
    """Return (task name, args) waiting in a broker queue (kombu keeps it as a Redis list)."""
    found = []
    for raw in reversed(redis.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        found.append((envelope["headers"]["task"], args))
    return found


def test_upload_enqueues_thumbnail_task_only_after_commit(
    sender_client, redis, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        body = post_image(sender_client, image_bytes("PNG"))
    assert queued_tasks(redis) == []  # nothing before commit

    for callback in callbacks:
        callback()

    assert queued_tasks(redis) == [("apps.media.tasks.make_thumbnails", [body["id"]])]


def test_non_images_enqueue_nothing(sender_client, redis, django_capture_on_commit_callbacks):
    from .conftest import pdf_bytes

    with django_capture_on_commit_callbacks(execute=True):
        post_image(sender_client, pdf_bytes(), "doc.pdf")

    assert queued_tasks(redis) == []


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1200, 800), {"small": (150, 100), "medium": (300, 200), "large": (600, 400)}),
        ((480, 960), {"small": (75, 150), "medium": (150, 300), "large": (300, 600)}),
        # Smaller than a box: kept as is, never enlarged.
        ((200, 100), {"small": (150, 75), "medium": (200, 100), "large": (200, 100)}),
    ],
)
def test_thumbnails_fit_their_box_with_the_aspect_kept(sender_client, media_root, size, expected):
    body = post_image(sender_client, image_bytes("JPEG", size=size), "photo.jpg")

    assert tasks.make_thumbnails.apply(args=[body["id"]]).get() == "ready"

    media = Media.objects.get(pk=body["id"])
    assert media.status == MediaStatus.READY
    assert media.failure_reason == ""
    for name, key in media.thumbnail_keys.items():
        with Image.open(io.BytesIO(read_key(key))) as thumb:
            assert thumb.format == "JPEG"
            assert thumb.size == expected[name]
            assert max(thumb.size) <= SIZES[name]
    assert sorted(stored_files(media_root)) == sorted([media.storage_key, *media.thumbnail_keys.values()])


def test_ready_image_shows_thumbnail_urls_that_download(sender_client, backend, request):
    body = post_image(sender_client, image_bytes("PNG", size=(900, 300)))
    tasks.make_thumbnails.apply(args=[body["id"]])

    shown = sender_client.get(f"/api/v1/media/{body['id']}/").json()

    assert shown["status"] == "ready"
    assert set(shown["thumbnails"]) == {"small", "medium", "large"}
    from .test_urls import fetch

    for name, url in shown["thumbnails"].items():
        status, content, headers = fetch(sender_client, url)
        assert status == 200
        assert headers["content-type"] == "image/jpeg"
        with Image.open(io.BytesIO(content)) as thumb:
            assert thumb.size == (SIZES[name], SIZES[name] // 3)
    media = Media.objects.get(pk=body["id"])
    # Stored next to the upload, one object per size.
    assert sorted(keys_in_storage(backend, request)) == sorted(
        [media.storage_key, *media.thumbnail_keys.values()]
    )


def test_transparent_image_gets_png_thumbnails(sender_client):
    body = post_image(sender_client, image_bytes("PNG", size=(400, 400), mode="RGBA"))
    tasks.make_thumbnails.apply(args=[body["id"]])

    media = Media.objects.get(pk=body["id"])
    for key in media.thumbnail_keys.values():
        assert key.endswith(".png")
        with Image.open(io.BytesIO(read_key(key))) as thumb:
            assert thumb.mode == "RGBA"


def test_exif_orientation_is_applied(sender_client):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    body = post_image(sender_client, image_bytes("JPEG", size=(800, 400), exif=exif.tobytes()), "phone.jpg")
    tasks.make_thumbnails.apply(args=[body["id"]])

    with Image.open(io.BytesIO(read_key(Media.objects.get(pk=body["id"]).thumbnail_large_key))) as thumb:
        assert thumb.size == (300, 600)


def test_running_the_task_twice_changes_nothing(sender_client, media_root):
    body = post_image(sender_client, image_bytes("PNG", size=(700, 700)))
    tasks.make_thumbnails.apply(args=[body["id"]])
    first = Media.objects.get(pk=body["id"])
    files = sorted(p.name for p in media_root.rglob("*") if p.is_file())

    assert tasks.make_thumbnails.apply(args=[body["id"]]).get() == "skipped"

    again = Media.objects.get(pk=body["id"])
    assert (again.status, again.thumbnail_keys) == (MediaStatus.READY, first.thumbnail_keys)
    assert sorted(p.name for p in media_root.rglob("*") if p.is_file()) == files


def test_rerun_of_an_interrupted_task_overwrites_instead_of_adding_files(sender_client, media_root):
    body = post_image(sender_client, image_bytes("PNG", size=(700, 700)))
    media = Media.objects.get(pk=body["id"])
    # A first worker wrote a thumbnail and died before recording anything.
    storage.storage().save(storage.thumbnail_key(media.storage_key, 150, "jpg"), ContentFile(b"partial"))

    tasks.make_thumbnails.apply(args=[body["id"]])

    media.refresh_from_db()
    assert len([p for p in media_root.rglob("*") if p.is_file()]) == 4
    assert read_key(media.thumbnail_small_key) != b"partial"


def test_unreadable_stored_image_is_marked_failed_with_a_reason(sender_client, backend):
    body = post_image(sender_client, image_bytes("PNG"))
    media = Media.objects.get(pk=body["id"])
    # The stored bytes went bad after the upload was accepted.
    storage.storage().save(media.storage_key, ContentFile(b"\x89PNG\r\n\x1a\n broken"))

    assert tasks.make_thumbnails.apply(args=[body["id"]]).get() == "failed"

    media.refresh_from_db()
    assert media.status == MediaStatus.FAILED
    assert "thumbnails could not be made" in media.failure_reason
    assert media.thumbnail_keys == {}
    assert sender_client.get(f"/api/v1/media/{body['id']}/").json()["thumbnails"] is None


def test_missing_stored_file_is_marked_failed(sender_client):
    body = post_image(sender_client, image_bytes("PNG"))
    storage.storage().delete(Media.objects.get(pk=body["id"]).storage_key)

    assert tasks.make_thumbnails.apply(args=[body["id"]]).get() == "failed"

    assert Media.objects.get(pk=body["id"]).status == MediaStatus.FAILED


def test_media_deleted_while_thumbnails_were_made_leaves_no_files(sender_client, media_root, monkeypatch):
    body = post_image(sender_client, image_bytes("PNG", size=(400, 300)))
    render = services.thumbnails_render

    def render_then_lose_the_row(file):
        rendered = render(file)
        Media.objects.filter(pk=body["id"]).delete()  # media_delete ran meanwhile
        return rendered

    monkeypatch.setattr(services, "thumbnails_render", render_then_lose_the_row)
    original_key = Media.objects.get(pk=body["id"]).storage_key

    assert services.media_thumbnails_make(media_id=body["id"]) == "deleted"

    assert [p.name for p in media_root.rglob("*") if p.is_file()] == [original_key.rsplit("/", 1)[-1]]


def test_failed_task_after_retries_marks_media_failed(sender_client, monkeypatch):
    body = post_image(sender_client, image_bytes("PNG"))

    def storage_down(**kwargs):
        raise ConnectionError("storage unreachable")

    monkeypatch.setattr(services, "media_thumbnails_make", storage_down)
    result = tasks.make_thumbnails.apply(args=[body["id"]], retries=tasks.MAX_RETRIES)

    assert result.get() == "failed"
    media = Media.objects.get(pk=body["id"])
    assert media.status == MediaStatus.FAILED
    assert "storage unreachable" in media.failure_reason
