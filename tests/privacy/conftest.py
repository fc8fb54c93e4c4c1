"""Fixtures of the data-protection tests: a private MEDIA_ROOT, a clean Redis, messages with history."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from apps.media.services import media_upload

FILESYSTEM = {
    "BACKEND": "django.core.files.storage.FileSystemStorage",
    "OPTIONS": {"allow_overwrite": True},
}


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path, redis) -> Path:
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.STORAGES = {**settings.STORAGES, "default": FILESYSTEM}
    settings.MEDIA_DOWNLOAD_BASE_URL = ""
    return Path(settings.MEDIA_ROOT)


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def pdf_upload(uploader, name: str = "doc.pdf"):
    """Store a real (tiny) PDF through the upload service, as `POST media/` does."""
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), "white").save(buffer, "PDF")
    return media_upload(
        uploader=uploader, upload=SimpleUploadedFile(name, buffer.getvalue(), content_type="application/pdf")
    )
