"""POST /api/v1/media/: type from the bytes, per-type limits, full image decode, streaming, rate limit."""

from __future__ import annotations

import io
import tracemalloc

import pytest
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.http.multipartparser import MultiPartParser
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image

from apps.media import services
from apps.media.errors import MediaTooLarge
from apps.media.models import Media, MediaStatus
from apps.media.uploads import MediaUploadHandler
from tests.factories import SenderFactory

from .conftest import (
    AV_SAMPLES,
    image_bytes,
    keys_in_storage,
    pdf_bytes,
    png_bomb,
    sample,
    stored_files,
    upload,
)

URL = "/api/v1/media/"
MB = 1024 * 1024


def post(client, content: bytes, name: str = "upload.bin", content_type: str = "application/octet-stream"):
    return client.post(URL, {"file": upload(content, name, content_type)}, format="multipart")


def assert_refused(response, status: int, media_root) -> None:
    assert response.status_code == status, response.content
    assert response.json()["detail"]
    assert not Media.objects.exists()
    assert stored_files(media_root) == []


# --- accepted types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [
        ("JPEG", "image/jpeg", "jpg"),
        ("PNG", "image/png", "png"),
        ("GIF", "image/gif", "gif"),
        ("WEBP", "image/webp", "webp"),
    ],
)
def test_image_is_accepted_processing_with_its_sniffed_type(
    sender_client, sender, backend, request, fmt, content_type, extension
):
    content = image_bytes(fmt)
    response = post(sender_client, content, f"holiday.{extension}", content_type)

    assert response.status_code == 201, response.content
    body = response.json()
    media = Media.objects.get()
    assert body["id"] == str(media.id)
    assert (body["media_type"], body["content_type"], body["size"]) == ("image", content_type, len(content))
    assert (body["status"], body["thumbnails"]) == ("processing", None)
    assert body["file_name"] == f"holiday.{extension}"
    assert body["url"] and body["url_expires_at"]
    assert media.sender == sender and media.mobile_user is None
    # The key is the server's: date folders, the media id, the sniffed type's extension.
    assert media.storage_key.startswith("media/") and media.storage_key.endswith(f"/{media.id}.{extension}")
    assert keys_in_storage(backend, request) == [media.storage_key]


@pytest.mark.parametrize(("name", "expected"), sorted(AV_SAMPLES.items()))
def test_video_and_audio_samples_are_ready_at_once(sender_client, name, expected):
    content = sample(name)
    # The client's name and type are deliberately wrong: only the bytes count.
    response = post(sender_client, content, "clip.txt", "text/plain")

    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["media_type"], body["content_type"]) == expected
    assert (body["status"], body["thumbnails"], body["size"]) == ("ready", None, len(content))
    assert Media.objects.get().status == MediaStatus.READY


def test_pdf_is_a_ready_document(sender_client):
    response = post(sender_client, pdf_bytes(), "invoice.pdf", "application/pdf")

    assert response.status_code == 201, response.content
    assert (response.json()["media_type"], response.json()["content_type"]) == ("document", "application/pdf")
    assert response.json()["status"] == "ready"


def test_png_renamed_jpg_is_accepted_as_png(sender_client, media_root):
    response = post(sender_client, image_bytes("PNG"), "photo.jpg", "image/jpeg")

    assert response.status_code == 201, response.content
    assert response.json()["content_type"] == "image/png"
    media = Media.objects.get()
    assert media.content_type == "image/png"
    assert media.storage_key.endswith(".png")
    assert media.file_name == "photo.jpg"  # shown as named, stored and served as what it is


def test_mobile_user_can_upload_and_owns_the_media(mobile_client, mobile_user):
    response = post(mobile_client, image_bytes("JPEG"), "me.jpg")

    assert response.status_code == 201, response.content
    media = Media.objects.get()
    assert media.mobile_user == mobile_user and media.sender is None


@pytest.mark.parametrize(
    ("raw_name", "shown"),
    [
        ("../../etc/passwd.png", "passwd.png"),
        ("C:\\Users\\me\\cat.png", "cat.png"),
        ("bad\x00name\x1f.png", "badname.png"),
        ("   ", "file"),
        ("a" * 300 + ".png", "a" * 251 + ".png"),
    ],
)
def test_file_name_is_sanitised_for_display(raw_name, shown):
    assert services.clean_file_name(raw_name) == shown


# --- refused types ----------------------------------------------------------------------------

SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
    b"<script>alert(document.cookie)</script></svg>"
)
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


@pytest.mark.parametrize(
    ("content", "name", "content_type"),
    [
        pytest.param(SVG, "logo.svg", "image/svg+xml", id="svg-with-script"),
        pytest.param(SVG, "logo.png", "image/png", id="svg-renamed-png"),
        pytest.param(HTML, "page.jpg", "image/jpeg", id="html-renamed-jpg"),
        # A GIF signature in front of a page: sniffs as GIF, but is no decodable image.
        pytest.param(b"GIF89a" + HTML, "pic.gif", "image/gif", id="gif-html-polyglot"),
        # A PNG signature in front of an SVG document.
        pytest.param(b"\x89PNG\r\n\x1a\n" + SVG, "pic.png", "image/png", id="png-svg-polyglot"),
        pytest.param(b"%!PS-Adobe-3.0\n", "doc.pdf", "application/pdf", id="postscript"),
        pytest.param(b"PK\x03\x04" + b"\x00" * 100, "doc.pdf", "application/pdf", id="zip"),
        pytest.param(b"MZ" + b"\x00" * 100, "song.mp3", "audio/mpeg", id="windows-executable"),
        pytest.param(b"just some text", "notes.txt", "text/plain", id="text"),
    ],
)
def test_html_svg_polyglots_and_other_types_are_refused(
    sender_client, media_root, content, name, content_type
):
    response = post(sender_client, content, name, content_type)

    assert_refused(response, 400, media_root)


def test_truncated_image_is_refused(sender_client, media_root):
    whole = image_bytes("PNG", size=(200, 150))

    response = post(sender_client, whole[: len(whole) // 2], "cut.png", "image/png")

    assert_refused(response, 400, media_root)
    assert "decoded" in response.json()["detail"]


def test_truncated_jpeg_is_refused(sender_client, media_root):
    whole = image_bytes("JPEG", size=(200, 150), quality=95)

    response = post(sender_client, whole[: len(whole) * 2 // 3], "cut.jpg", "image/jpeg")

    assert_refused(response, 400, media_root)


def test_image_over_the_pixel_limit_is_refused_from_its_header(sender_client, media_root, settings):
    settings.MEDIA_IMAGE_MAX_PIXELS = 100 * 100
    response = post(sender_client, image_bytes("PNG", size=(101, 100)), "big.png")

    assert_refused(response, 400, media_root)
    assert "10,000 pixels" in response.json()["detail"]


def test_pixel_limit_is_well_below_pillows_default(settings):
    assert settings.MEDIA_IMAGE_MAX_PIXELS <= 24_000_000
    assert Image.MAX_IMAGE_PIXELS == settings.MEDIA_IMAGE_MAX_PIXELS


def test_huge_dimension_image_bomb_is_refused_with_bounded_memory(sender_client, media_root):
    bomb = png_bomb(100_000, 100_000)  # 10^10 pixels claimed in ~400 bytes
    pillow_before = Image.core.get_stats()["new_count"]
    tracemalloc.start()
    try:
        response = post(sender_client, bomb, "bomb.png", "image/png")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert_refused(response, 400, media_root)
    assert "pixels" in response.json()["detail"]
    # Not one pixel buffer was allocated by Pillow (that is where 30 GB would have gone), and
    # Python-side allocations for the whole request stayed small.
    assert Image.core.get_stats()["new_count"] == pillow_before
    assert peak < 20 * MB


def test_animated_gif_with_too_many_frames_is_refused(sender_client, media_root, settings):
    settings.MEDIA_IMAGE_MAX_FRAMES = 3
    frames = [Image.new("RGB", (10, 10), (60 * n, 0, 0)) for n in range(4)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])

    response = post(sender_client, buffer.getvalue(), "anim.gif")

    assert_refused(response, 400, media_root)


def test_missing_file_field_is_a_400(sender_client, media_root):
    response = sender_client.post(URL, {"other": upload(image_bytes(), "x.png")}, format="multipart")

    assert_refused(response, 400, media_root)
    assert "file" in response.json()


def test_anonymous_upload_is_refused(db, anonymous_client, media_root):
    response = post(anonymous_client, image_bytes())

    assert response.status_code == 401
    assert not Media.objects.exists()


# --- size limits ------------------------------------------------------------------------------


def test_size_limits_are_the_specified_ones(settings):
    assert settings.MEDIA_SIZE_LIMITS == {
        "image": 10 * MB,
        "video": 50 * MB,
        "audio": 20 * MB,
        "document": 5 * MB,
    }


HEADS = {
    "image": image_bytes("PNG", size=(8, 8)),  # bytes after IEND are ignored by decoders
    "video": sample("sample.mp4"),
    "audio": sample("sample.mp3"),
    "document": pdf_bytes(),
}


def temporary_upload(head: bytes, size: int) -> TemporaryUploadedFile:
    """Return an upload of exactly `size` bytes: `head`, then zeros (a sparse file: cheap)."""
    file = TemporaryUploadedFile("big.bin", "application/octet-stream", size, "utf-8")
    file.write(head)
    file.truncate(size)
    file.seek(0)
    return file


@hypothesis_settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    media_type=st.sampled_from(sorted(HEADS)),
    offset=st.one_of(st.integers(-3, 3), st.integers(-MB, MB)),
)
@pytest.mark.django_db
def test_upload_is_accepted_iff_its_size_is_within_its_type_limit(settings, media_root, media_type, offset):
    limit = settings.MEDIA_SIZE_LIMITS[media_type]
    size = limit + offset
    sender = SenderFactory()
    before = set(stored_files(media_root))

    with temporary_upload(HEADS[media_type], size) as file:
        if size <= limit:
            media = services.media_upload(uploader=sender, upload=file)
            assert (media.media_type, media.size) == (media_type, size)
            assert (media_root / media.storage_key).stat().st_size == size
        else:
            with pytest.raises(MediaTooLarge):
                services.media_upload(uploader=sender, upload=file)
            assert not Media.objects.filter(sender=sender).exists()
            assert set(stored_files(media_root)) == before


def test_too_large_for_its_type_is_a_413_even_under_the_streaming_cut_off(
    sender_client, media_root, settings
):
    settings.MEDIA_SIZE_LIMITS = {**settings.MEDIA_SIZE_LIMITS, "document": 1000}
    content = pdf_bytes()
    content += b"\n%" + b"x" * (1001 - len(content) - 2)

    response = post(sender_client, content, "big.pdf")

    assert_refused(response, 413, media_root)
    assert "1,000 bytes" in response.json()["detail"]


def test_upload_past_the_largest_limit_is_cut_off_while_streaming(
    sender_client, media_root, settings, tmp_path
):
    limit = 64 * 1024
    settings.MEDIA_SIZE_LIMITS = {"image": limit, "video": limit, "audio": limit, "document": limit}
    content = sample("sample.mp4") + b"\x00" * limit

    response = post(sender_client, content, "long.mp4")

    assert_refused(response, 413, media_root)
    # The partial temporary file was removed with the refused request.
    assert list((tmp_path / "uploads").iterdir()) == []


class _LazyBody(io.RawIOBase):
    """A multipart body of `size` file bytes produced on the fly (never held in memory)."""

    BOUNDARY = b"BoUnDaRy"

    def __init__(self, size: int) -> None:
        self.head = (
            b"--" + self.BOUNDARY + b"\r\n"
            b'Content-Disposition: form-data; name="file"; filename="big.mp4"\r\n'
            b"Content-Type: video/mp4\r\n\r\n"
        ) + sample("sample.mp4")
        self.tail = b"\r\n--" + self.BOUNDARY + b"--\r\n"
        self.remaining = size
        self.read_total = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = 64 * 1024 if n is None or n < 0 else n
        if self.head:
            chunk, self.head = self.head[:n], self.head[n:]
        elif self.remaining > 0:
            chunk = b"\x00" * min(n, self.remaining)
            self.remaining -= len(chunk)
        else:
            chunk, self.tail = self.tail[:n], self.tail[n:]
        self.read_total += len(chunk)
        return chunk


def test_upload_handler_streams_to_disk_and_stops_just_past_the_largest_limit(settings, tmp_path):
    body = _LazyBody(size=200 * MB)
    handler = MediaUploadHandler()
    limit = max(settings.MEDIA_SIZE_LIMITS.values())
    meta = {
        "CONTENT_TYPE": f"multipart/form-data; boundary={_LazyBody.BOUNDARY.decode()}",
        # Within the multipart allowance, so only counting the file's bytes can stop it.
        "CONTENT_LENGTH": str(limit + 32 * 1024),
    }
    tracemalloc.start()
    try:
        MultiPartParser(meta, body, [handler]).parse()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert handler.too_large
    assert limit < body.read_total < limit + 2 * MB  # stopped right after the limit, not at 200 MB
    assert peak < 10 * MB  # streamed through a temporary file, never held in memory
    assert list((tmp_path / "uploads").iterdir()) == []


def test_declared_length_past_the_largest_limit_is_refused_before_parsing(settings):
    handler = MediaUploadHandler()
    limit = max(settings.MEDIA_SIZE_LIMITS.values())

    result = handler.handle_raw_input(io.BytesIO(), {}, limit + 10 * MB, b"b", "utf-8")

    assert handler.too_large
    assert result is not None and not result[1]


def test_a_second_file_is_not_written_anywhere(sender_client, media_root, tmp_path):
    response = sender_client.post(
        URL,
        {"file": [upload(image_bytes("PNG"), "a.png"), upload(image_bytes("JPEG"), "b.jpg")]},
        format="multipart",
    )

    assert response.status_code == 201, response.content
    assert Media.objects.get().content_type == "image/png"
    assert len(stored_files(media_root)) == 1


# --- rate limit -------------------------------------------------------------------------------


def test_eleventh_upload_in_a_minute_is_429_with_retry_after(sender_client, other_sender_client, media_root):
    for n in range(10):
        assert post(sender_client, image_bytes("PNG"), f"{n}.png").status_code == 201

    refused = post(sender_client, image_bytes("PNG"), "11.png")

    assert refused.status_code == 429
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused.json()["detail"]
    assert Media.objects.count() == 10
    assert len(stored_files(media_root)) == 10
    # The limit is per user.
    assert post(other_sender_client, image_bytes("PNG"), "mine.png").status_code == 201


def test_refused_uploads_count_against_the_rate_limit(mobile_client):
    for _ in range(10):
        assert post(mobile_client, b"not an image").status_code == 400

    assert post(mobile_client, image_bytes("PNG")).status_code == 429


def test_uploads_are_allowed_when_redis_is_unreachable(sender_client, settings, caplog):
    from apps.common.redis import redis_client

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    redis_client.cache_clear()

    response = post(sender_client, image_bytes("PNG"))

    assert response.status_code == 201
    assert any(r.message == "ratelimit.unavailable" for r in caplog.records)
