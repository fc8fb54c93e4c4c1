"""Where media bytes live and how clients fetch them: keys, signed URLs, download tokens.

Everything goes through Django's default storage. On the filesystem backend a URL is a link to
the app's download view carrying a signed, timestamped token (django.core.signing); on S3 it
is a presigned GET URL. Either way it is valid for MEDIA_URL_EXPIRE_SECONDS (1 h), and the
`expires_at` returned with it is read back from the URL itself, so the two cannot disagree.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core import signing
from django.core.files.storage import Storage, default_storage
from django.urls import reverse

from .models import Media, ThumbnailSize

DOWNLOAD_SALT = "apps.media.download"
# Thumbnails are JPEG, or PNG when the picture has transparency.
THUMBNAIL_FORMATS = {"JPEG": ("jpg", "image/jpeg"), "PNG": ("png", "image/png")}
THUMBNAIL_NAMES = {ThumbnailSize.SMALL: "small", ThumbnailSize.MEDIUM: "medium", ThumbnailSize.LARGE: "large"}


def storage() -> Storage:
    """Return the storage media are kept in (the default storage: filesystem or S3)."""
    return default_storage


def object_key(*, media_id: uuid.UUID, extension: str, now: datetime) -> str:
    """Return the server-chosen key of an upload: `media/<yyyy>/<mm>/<id>.<ext>`."""
    return f"media/{now:%Y}/{now:%m}/{media_id}.{extension}"


def thumbnail_key(storage_key: str, size: int, extension: str) -> str:
    """Return the key of the `size` px thumbnail of the upload stored at `storage_key`."""
    stem = storage_key.rsplit(".", 1)[0]
    return f"{stem}_{size}.{extension}"


def all_keys(media: Media) -> list[str]:
    """Return every key that may hold bytes of `media`: the upload and any thumbnail.

    Thumbnails not yet recorded (a task may be writing them) are named by every possible key.
    """
    keys = [media.storage_key, *media.thumbnail_keys.values()]
    if media.media_type == "image" and not media.thumbnail_keys:
        keys += [
            thumbnail_key(media.storage_key, size, ext)
            for size in ThumbnailSize.values
            for ext, _ in THUMBNAIL_FORMATS.values()
        ]
    return keys


def _is_s3(backend: Storage) -> bool:
    from storages.backends.s3 import S3Storage

    # default_storage is a lazy proxy, which isinstance sees through.
    return isinstance(backend, S3Storage)


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: datetime


def signed_url(key: str, *, content_type: str, file_name: str = "") -> SignedUrl:
    """Return a URL that downloads `key` for MEDIA_URL_EXPIRE_SECONDS, and when it expires."""
    backend = storage()
    if _is_s3(backend):
        parameters = {"ResponseContentType": content_type}
        if file_name:
            parameters["ResponseContentDisposition"] = _inline(file_name)
        url = backend.url(key, parameters=parameters, expire=settings.MEDIA_URL_EXPIRE_SECONDS)
        return SignedUrl(url, presigned_expiry(url))
    token = signing.dumps({"k": key, "t": content_type, "n": file_name}, salt=DOWNLOAD_SALT, compress=True)
    path = reverse("media-download", kwargs={"token": token})
    return SignedUrl(settings.MEDIA_DOWNLOAD_BASE_URL.rstrip("/") + path, token_expiry(token))


def token_expiry(token: str) -> datetime:
    """Return when a download token stops being accepted (its signing time + the validity)."""
    # A TimestampSigner value is `<payload>:<base62 seconds>:<signature>`.
    signed_at = signing.b62_decode(token.rsplit(signing.Signer().sep, 2)[-2])
    return datetime.fromtimestamp(signed_at, tz=UTC) + timedelta(seconds=settings.MEDIA_URL_EXPIRE_SECONDS)


def presigned_expiry(url: str) -> datetime:
    """Return when an S3 presigned URL expires, from its own query (SigV4 or SigV2)."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    if "X-Amz-Expires" in query:
        signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return signed_at + timedelta(seconds=int(query["X-Amz-Expires"]))
    return datetime.fromtimestamp(int(query["Expires"]), tz=UTC)


@dataclass(frozen=True)
class Download:
    key: str
    content_type: str
    file_name: str


def download_for_token(token: str) -> Download:
    """Return what a download token grants; raise signing.BadSignature (or its subclass
    SignatureExpired) when it was tampered with or is older than MEDIA_URL_EXPIRE_SECONDS."""
    data = signing.loads(token, salt=DOWNLOAD_SALT, max_age=settings.MEDIA_URL_EXPIRE_SECONDS)
    return Download(key=data["k"], content_type=data["t"], file_name=data.get("n", ""))


def _inline(file_name: str) -> str:
    from django.utils.http import content_disposition_header

    return content_disposition_header(False, file_name) or "inline"
