"""Media fixtures: a private MEDIA_ROOT per test, a real S3 API (moto in server mode), samples.

The S3 server is started once per session on a free port; each test that uses it gets its own
bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import io
import socket
import struct
import uuid
import zlib
from pathlib import Path

import boto3
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

SAMPLES = Path(__file__).parent / "samples"
FILESYSTEM = {
    "BACKEND": "django.core.files.storage.FileSystemStorage",
    "OPTIONS": {"allow_overwrite": True},
}
# Real files made with ffmpeg (tests/media/samples), by the content type they must be stored as.
AV_SAMPLES = {
    "sample.mp4": ("video", "video/mp4"),
    "sample.mov": ("video", "video/quicktime"),
    "sample.webm": ("video", "video/webm"),
    "sample.mp3": ("audio", "audio/mpeg"),
    "sample-no-id3.mp3": ("audio", "audio/mpeg"),
    "sample.m4a": ("audio", "audio/mp4"),
    "sample.aac": ("audio", "audio/aac"),
    "sample.ogg": ("audio", "audio/ogg"),
    "sample.wav": ("audio", "audio/wav"),
}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (40, 30), mode: str = "RGB", **save) -> bytes:
    """Return a real, decodable image; its pixels vary so no encoder can shortcut it."""
    image = Image.new(mode, size)
    width, height = size
    image.putdata(
        [
            ((x * 7) % 256, (y * 5) % 256, (x + y) % 256, 128)[: len(mode)]
            if len(mode) > 1
            else (x + y) % 256
            for y in range(height)
            for x in range(width)
        ]
    )
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def pdf_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), "white").save(buffer, "PDF")
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """Return a tiny PNG whose header claims `width`x`height` pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # A few rows of real (highly compressible) data: decoding it all would need widthxheightx3 bytes.
    idat = zlib.compress(b"\x00" * (width * 3 + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def upload(content: bytes, name: str = "file.bin", content_type: str = "application/octet-stream"):
    return SimpleUploadedFile(name, content, content_type=content_type)


@pytest.fixture(autouse=True)
def _clean_redis(redis):
    """Start every media test with an empty Redis (upload rate-limit windows live there)."""


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path) -> Path:
    """Store files under a fresh directory; links relative to the test server."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.STORAGES = {**settings.STORAGES, "default": FILESYSTEM}
    settings.MEDIA_DOWNLOAD_BASE_URL = ""
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "uploads")
    (tmp_path / "uploads").mkdir()
    return Path(settings.MEDIA_ROOT)


def stored_files(root: Path) -> list[str]:
    """Return the stored keys under a MEDIA_ROOT (relative paths), sorted."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- S3 (moto server) -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """Start a real S3 API (moto's server, in a thread of this process) for the session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


S3_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class S3Bucket:
    def __init__(self, endpoint: str, name: str) -> None:
        self.name = name
        self.client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **S3_CREDENTIALS)

    def keys(self) -> list[str]:
        listing = self.client.list_objects_v2(Bucket=self.name)
        return sorted(obj["Key"] for obj in listing.get("Contents", []))

    def get(self, key: str) -> dict:
        return self.client.get_object(Bucket=self.name, Key=key)


@pytest.fixture
def s3(settings, s3_endpoint) -> S3Bucket:
    """Point the default storage at a new bucket of the moto server (STORAGE_BACKEND=s3)."""
    bucket = S3Bucket(s3_endpoint, f"media-{uuid.uuid4().hex[:16]}")
    bucket.client.create_bucket(Bucket=bucket.name)
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket.name,
                "endpoint_url": s3_endpoint,
                "region_name": "us-east-1",
                "access_key": S3_CREDENTIALS["aws_access_key_id"],
                "secret_key": S3_CREDENTIALS["aws_secret_access_key"],
                "signature_version": "s3v4",
                "querystring_expire": 3600,
                "default_acl": None,
            },
        },
    }
    return bucket


@pytest.fixture(params=["filesystem", "s3"])
def backend(request, media_root) -> str:
    """Run the test once on the filesystem backend and once on S3."""
    if request.param == "s3":
        request.getfixturevalue("s3")
    return request.param


def keys_in_storage(backend: str, request) -> list[str]:
    if backend == "s3":
        return request.getfixturevalue("s3").keys()
    return stored_files(request.getfixturevalue("media_root"))
