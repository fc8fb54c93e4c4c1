"""Data protection endpoints of mobile users: export (GET) and erase (DELETE) themselves."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import IsMobileUser
from apps.audit.services import audit_record

from .selectors import mobile_user_export
from .services import mobile_user_erase


class MobileExportApi(APIView):
    """Everything stored about the caller, as one JSON document, streamed."""

    permission_classes = [IsMobileUser]

    @extend_schema(responses={200: OpenApiResponse(description="The export document (JSON).")})
    def get(self, request: Request) -> StreamingHttpResponse:
        audit_record(
            action="mobile_user.export",
            object_type="accounts.mobileuser",
            object_id=request.user.pk,
            actor=request.user,
        )
        response = StreamingHttpResponse(
            mobile_user_export(mobile_user=request.user), content_type="application/json"
        )
        response["Content-Disposition"] = 'attachment; filename="export.json"'
        response["Cache-Control"] = "no-store"
        return response


class MobileMeApi(APIView):
    """Erase the caller: 204, and its tokens and sockets stop at once."""

    permission_classes = [IsMobileUser]

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request) -> Response:
        mobile_user_erase(mobile_user=request.user, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
