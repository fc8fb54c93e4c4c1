"""Writes for media: accept an upload, attach media to a message, thumbnails, delete, clean up.

Bytes are written to storage before the row that names them is committed, and removed only
after the transaction that deleted their row has committed, so a row never names missing
bytes because of a rollback. Every job here claims its rows with a conditional update or a
skip-locked lock and is safe to run twice or on two machines at once.
"""

from __future__ import annotations

import logging
import os
import unicodedata
import uuid
from collections.abc import Iterable, Sequence
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.db.models import Case, QuerySet, When
from django.utils import timezone

from apps.accounts.models import MobileUser, User
from apps.common.breaker import STORAGE, CircuitOpen, breaker
from apps.common.ids import parse_uuid
from apps.common.ratelimit import Decision, SlidingWindowLimiter

from .errors import (
    MediaAttached,
    MediaNotAttachable,
    MediaNotFound,
    MediaTooLarge,
    StorageUnavailable,
    UnsupportedMedia,
)
from .images import DECODE_ERRORS, image_validate, thumbnails_render
from .models import Media, MediaStatus, MediaType
from .selectors import media_owned_by
from .sniffing import size_limit, sniff_file
from .storage import THUMBNAIL_FORMATS, all_keys, object_key, storage, thumbnail_key

logger = logging.getLogger(__name__)

MAX_FILE_NAME = 255
FALLBACK_FILE_NAME = "file"


# --- Uploading ------------------------------------------------------------------------------


def upload_limiter() -> SlidingWindowLimiter:
    return SlidingWindowLimiter(
        name="media-upload",
        limit=settings.MEDIA_UPLOADS_PER_MINUTE,
        window_seconds=60,
    )


def _identity(principal: User | MobileUser) -> str:
    return f"{'mobile' if isinstance(principal, MobileUser) else 'sender'}:{principal.pk}"


def media_upload_admit(*, uploader: User | MobileUser) -> Decision:
    """Count an upload attempt of `uploader` against MEDIA_UPLOADS_PER_MINUTE."""
    return upload_limiter().hit(_identity(uploader))


def clean_file_name(name: str | None) -> str:
    """Return `name` fit for display: no path, no control characters, at most 255 characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip().strip(".")
    if not name:
        return FALLBACK_FILE_NAME
    if len(name) > MAX_FILE_NAME:
        stem, ext = os.path.splitext(name)
        ext = ext[:16]
        name = stem[: MAX_FILE_NAME - len(ext)] + ext
    return name


def media_upload(*, uploader: User | MobileUser, upload: UploadedFile) -> Media:
    """Check the upload's bytes and size, store it under a server-chosen key and record it.

    Images are decoded in full first and start `processing` (thumbnails are made after
    commit); everything else is `ready` at once.
    """
    kind = sniff_file(upload)
    if kind is None:
        raise UnsupportedMedia()
    limit = size_limit(kind.media_type)
    if upload.size > limit:
        raise MediaTooLarge(
            f"The {kind.media_type} is {upload.size:,} bytes; at most {limit:,} bytes are accepted."
        )
    if kind.media_type == MediaType.IMAGE:
        image_validate(upload, pillow_format=kind.pillow_format)
    media_id = uuid.uuid4()
    key = object_key(media_id=media_id, extension=kind.extension, now=timezone.now())
    # S3 stores the object with this content type (otherwise it would take the client's).
    upload.content_type = kind.content_type
    upload.seek(0)
    # While the store keeps failing its breaker refuses at once: 503, not a slow 500 per upload.
    try:
        with breaker(STORAGE).guard():
            stored_key = storage().save(key, upload)
    except CircuitOpen as exc:
        raise StorageUnavailable() from exc
    is_image = kind.media_type == MediaType.IMAGE
    try:
        with transaction.atomic():
            media = Media.objects.create(
                id=media_id,
                sender=uploader if isinstance(uploader, User) else None,
                mobile_user=uploader if isinstance(uploader, MobileUser) else None,
                media_type=kind.media_type,
                content_type=kind.content_type,
                size=upload.size,
                file_name=clean_file_name(upload.name),
                storage_key=stored_key,
                status=MediaStatus.PROCESSING if is_image else MediaStatus.READY,
            )
            if is_image:
                transaction.on_commit(lambda: _enqueue_thumbnails([media.pk]))
    except BaseException:
        _delete_files([stored_key])
        raise
    logger.info(
        "media.uploaded",
        extra={"media_id": str(media.pk), "content_type": media.content_type, "size": media.size},
    )
    return media


def _enqueue_thumbnails(media_ids: Iterable[uuid.UUID]) -> int:
    from .tasks import make_thumbnails

    enqueued = 0
    for pk in media_ids:
        try:
            make_thumbnails.delay(str(pk))
        except Exception as exc:  # noqa: BLE001 - the processing sweep re-dispatches it
            logger.warning("media.thumbnail_dispatch_failed", extra={"media_id": str(pk), "error": repr(exc)})
            break
        enqueued += 1
    return enqueued


# --- Attaching ------------------------------------------------------------------------------


def media_attach(
    *, message, uploader: User | MobileUser, media_ids: Sequence[uuid.UUID | str]
) -> list[Media]:
    """Attach the uploader's unattached media to `message`, in the order given.

    Must run inside the transaction that stores the message: the rows are locked, so the
    cleanup job or a concurrent send cannot take them meanwhile. Raise MediaNotFound when an
    id is not the uploader's or is already attached, MediaNotAttachable when one failed.
    """
    ids = list(dict.fromkeys(parse_uuid(pk) for pk in media_ids))
    if not ids:
        return []
    if None in ids:
        raise MediaNotFound("Attachment ids must be UUIDs.")
    rows = {
        m.pk: m
        for m in media_owned_by(uploader)
        .filter(pk__in=ids, message__isnull=True)
        .select_for_update()
        .order_by("pk")
    }
    missing = [str(pk) for pk in ids if pk not in rows]
    if missing:
        raise MediaNotFound(f"No unattached media of yours has the id(s) {', '.join(missing)}.")
    failed = [str(pk) for pk in ids if rows[pk].status == MediaStatus.FAILED]
    if failed:
        raise MediaNotAttachable(f"Media {', '.join(failed)} failed processing and cannot be attached.")
    Media.objects.filter(pk__in=ids).update(
        message=message, position=Case(*(When(pk=pk, then=i) for i, pk in enumerate(ids)))
    )
    return [rows[pk] for pk in ids]


# --- Thumbnails -----------------------------------------------------------------------------


def media_thumbnails_make(*, media_id: str | uuid.UUID) -> str:
    """Make the 150/300/600 px thumbnails of a `processing` image and mark it `ready`.

    Return what happened. A file Pillow cannot read marks the media `failed`; storage errors
    propagate so the task retries.
    """
    media = Media.objects.filter(pk=media_id, status=MediaStatus.PROCESSING).first()
    if media is None:
        return "skipped"
    backend = storage()
    try:
        with backend.open(media.storage_key, "rb") as file:
            rendered = thumbnails_render(file)
    except FileNotFoundError:
        media_fail(media_id=media.pk, reason="the uploaded file is missing from storage")
        return "failed"
    except DECODE_ERRORS as exc:
        media_fail(media_id=media.pk, reason=f"thumbnails could not be made: {exc}")
        return "failed"
    keys = {}
    for size, (data, fmt) in rendered.items():
        key = thumbnail_key(media.storage_key, size, THUMBNAIL_FORMATS[fmt][0])
        keys[size] = backend.save(key, ContentFile(data))
    done = Media.objects.filter(pk=media.pk, status=MediaStatus.PROCESSING).update(
        status=MediaStatus.READY,
        thumbnail_small_key=keys[150],
        thumbnail_medium_key=keys[300],
        thumbnail_large_key=keys[600],
    )
    if not done and not Media.objects.filter(pk=media.pk).exists():
        # Deleted while we worked: its deleter may have missed the files just written.
        _delete_files(keys.values())
        return "deleted"
    return "ready" if done else "skipped"


def media_fail(*, media_id: str | uuid.UUID, reason: str) -> bool:
    """Move a `processing` media to `failed` with `reason`; return whether it moved."""
    moved = Media.objects.filter(pk=media_id, status=MediaStatus.PROCESSING).update(
        status=MediaStatus.FAILED, failure_reason=reason[:500]
    )
    if moved:
        logger.warning("media.failed", extra={"media_id": str(media_id), "reason": reason})
    return bool(moved)


# --- Deleting and cleaning up ---------------------------------------------------------------


def media_delete(*, media: Media) -> None:
    """Delete an unattached media: its row now, its files after commit.

    Raise MediaAttached when it is attached to a message (also if a send attached it since
    it was read: the row is re-read under a lock).
    """
    with transaction.atomic():
        locked = Media.objects.select_for_update().filter(pk=media.pk).first()
        if locked is None:
            return
        if locked.message_id is not None:
            raise MediaAttached()
        keys = all_keys(locked)
        locked.delete()
        transaction.on_commit(lambda: _delete_files(keys))
    logger.info("media.deleted", extra={"media_id": str(media.pk)})


def media_delete_many(*, media: QuerySet[Media]) -> int:
    """Delete `media` whether attached or not (erasure, retention): rows now, files after commit.

    Run it inside the caller's transaction: the files go only if that transaction commits.
    Return how many rows were removed.
    """
    with transaction.atomic():
        doomed = list(media.order_by().select_for_update())
        if not doomed:
            return 0
        Media.objects.filter(pk__in=[m.pk for m in doomed]).delete()
        keys = [key for m in doomed for key in all_keys(m)]
        transaction.on_commit(lambda: _delete_files(keys))
    return len(doomed)


def media_cleanup_unattached(*, limit: int | None = None) -> int:
    """Delete uploads never attached within MEDIA_UNATTACHED_TTL_HOURS: rows, files, thumbnails.

    Rows are claimed with a lock that other runs skip, so two beats share the work.
    Return how many were removed.
    """
    cutoff = timezone.now() - timedelta(hours=settings.MEDIA_UNATTACHED_TTL_HOURS)
    with transaction.atomic():
        claimed = list(
            Media.objects.filter(message__isnull=True, created_at__lt=cutoff)
            .order_by("created_at")
            .select_for_update(skip_locked=True)[: limit or settings.MEDIA_CLEANUP_BATCH]
        )
        if not claimed:
            return 0
        Media.objects.filter(pk__in=[m.pk for m in claimed], message__isnull=True).delete()
        keys = [key for m in claimed for key in all_keys(m)]
        transaction.on_commit(lambda: _delete_files(keys))
    logger.info("media.cleanup", extra={"count": len(claimed)})
    return len(claimed)


def media_sweep_processing(*, limit: int | None = None) -> int:
    """Re-dispatch thumbnail work for images `processing` longer than expected (lost tasks)."""
    cutoff = timezone.now() - timedelta(seconds=settings.MEDIA_PROCESSING_GRACE_SECONDS)
    ids = list(
        Media.objects.filter(status=MediaStatus.PROCESSING, created_at__lt=cutoff)
        .order_by("created_at")
        .values_list("pk", flat=True)[: limit or settings.MEDIA_CLEANUP_BATCH]
    )
    return _enqueue_thumbnails(ids) if ids else 0


def media_sweep() -> dict[str, int]:
    """Run the periodic media jobs: cleanup of unattached uploads, lost thumbnail work."""
    return {"removed": media_cleanup_unattached(), "redispatched": media_sweep_processing()}


def _delete_files(keys: Iterable[str]) -> None:
    backend = storage()
    for key in keys:
        try:
            backend.delete(key)
        except Exception as exc:  # noqa: BLE001 - a leftover file must not fail the caller
            logger.warning("media.file_delete_failed", extra={"key": key, "error": repr(exc)})
