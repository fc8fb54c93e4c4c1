"""Media endpoints: upload, show, delete (API), and the signed download of the filesystem backend."""

from __future__ import annotations

from django.conf import settings
from django.core import signing
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_safe
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, Throttled, ValidationError
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .errors import MediaTooLarge
from .selectors import media_get_for_owner
from .serializers import MediaSerializer
from .services import media_delete, media_upload, media_upload_admit
from .storage import download_for_token, storage
from .uploads import FILE_FIELD, MediaUploadHandler


class MediaUploadApi(APIView):
    """Upload one file (multipart field `file`); its type is decided from its bytes."""

    parser_classes = [MultiPartParser]

    @extend_schema(
        request=inline_serializer("MediaUpload", fields={"file": serializers.FileField()}),
        responses={201: MediaSerializer},
    )
    def post(self, request: Request) -> Response:
        # Counted before the body is parsed, so a flood is refused before it costs a disk write.
        decision = media_upload_admit(uploader=request.user)
        if not decision.allowed:
            raise Throttled(
                wait=decision.retry_after,
                detail=f"Too many uploads: at most {settings.MEDIA_UPLOADS_PER_MINUTE} a minute.",
            )
        handler = MediaUploadHandler(request._request)
        request._request.upload_handlers = [handler]
        upload = request.FILES.get(FILE_FIELD)
        if handler.too_large:
            raise MediaTooLarge(f"The file is larger than {handler.limit:,} bytes, the most accepted.")
        if upload is None:
            raise ValidationError({FILE_FIELD: ["Send the file as the multipart field 'file'."]})
        try:
            media = media_upload(uploader=request.user, upload=upload)
        finally:
            upload.close()
        return Response(MediaSerializer(media).data, status=status.HTTP_201_CREATED)


class MediaDetailApi(APIView):
    """Show one of the caller's media with fresh URLs, or delete it while unattached."""

    def _get(self, request: Request, media_id: str):
        media = media_get_for_owner(owner=request.user, media_id=media_id)
        if media is None:
            raise NotFound("No media with this id among yours.")
        return media

    @extend_schema(responses=MediaSerializer)
    def get(self, request: Request, media_id: str) -> Response:
        return Response(MediaSerializer(self._get(request, media_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, media_id: str) -> Response:
        media_delete(media=self._get(request, media_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


@require_safe
def download(request: HttpRequest, token: str) -> HttpResponse:
    """Stream the file a signed download token names (the filesystem backend's URLs)."""
    try:
        grant = download_for_token(token)
    except signing.SignatureExpired:
        return JsonResponse({"detail": "This download link has expired."}, status=403)
    except signing.BadSignature:
        return JsonResponse({"detail": "This download link is not valid."}, status=403)
    try:
        file = storage().open(grant.key, "rb")
    except FileNotFoundError:
        return JsonResponse({"detail": "This file no longer exists."}, status=404)
    response = FileResponse(file, content_type=grant.content_type)
    response["Content-Disposition"] = (
        content_disposition_header(False, grant.file_name) if grant.file_name else "inline"
    )
    # The bytes were checked at upload, but never let a browser run them as a page.
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response
