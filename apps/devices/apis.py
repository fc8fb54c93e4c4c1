"""Device and push-preference endpoints of mobile users (SPEC.md section 3)."""

from __future__ import annotations

from functools import cache
from zoneinfo import available_timezones

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import IsMobileUser
from apps.common.pagination import PagePagination

from . import selectors
from .models import TOKEN_MAX_LENGTH, DeviceToken, Platform
from .services import device_delete, device_register, device_update, preferences_update


class DeviceSerializer(serializers.ModelSerializer):
    class Meta:
        model = DeviceToken
        fields = ["id", "token", "platform", "is_active", "last_used_at", "created_at"]


def _device_or_404(request: Request, device_id: int) -> DeviceToken:
    device = selectors.device_for_user(mobile_user=request.user, device_id=device_id)
    if device is None:
        raise NotFound("No device with this id among yours.")
    return device


class DeviceListCreateApi(APIView):
    """Register a device token (201 new, 200 re-registered) or list the caller's devices."""

    permission_classes = [IsMobileUser]
    # Read by GET and by the schema generator, which then documents the paginated envelope.
    pagination_class = PagePagination

    class DeviceRegisterInputSerializer(serializers.Serializer):
        token = serializers.CharField(max_length=TOKEN_MAX_LENGTH, trim_whitespace=True)
        platform = serializers.ChoiceField(choices=Platform.choices)

    @extend_schema(
        request=DeviceRegisterInputSerializer, responses={200: DeviceSerializer, 201: DeviceSerializer}
    )
    def post(self, request: Request) -> Response:
        serializer = self.DeviceRegisterInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device, created = device_register(mobile_user=request.user, **serializer.validated_data)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(DeviceSerializer(device).data, status=code)

    @extend_schema(responses=DeviceSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            selectors.devices_for_user(mobile_user=request.user), request, view=self
        )
        return paginator.get_paginated_response(DeviceSerializer(page, many=True).data)


class DeviceDetailApi(APIView):
    """Show, switch on/off (`is_active`) or remove one of the caller's devices."""

    permission_classes = [IsMobileUser]

    class DeviceUpdateInputSerializer(serializers.Serializer):
        is_active = serializers.BooleanField()

    @extend_schema(responses=DeviceSerializer)
    def get(self, request: Request, device_id: int) -> Response:
        return Response(DeviceSerializer(_device_or_404(request, device_id)).data)

    # Not the generated "Patched" form, where every field is optional: is_active is required.
    @extend_schema(
        request={
            "application/json": {
                "type": "object",
                "properties": {"is_active": {"type": "boolean"}},
                "required": ["is_active"],
            }
        },
        responses=DeviceSerializer,
    )
    def patch(self, request: Request, device_id: int) -> Response:
        device = _device_or_404(request, device_id)
        serializer = self.DeviceUpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        device = device_update(device=device, **serializer.validated_data)
        return Response(DeviceSerializer(device).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, device_id: int) -> Response:
        device_delete(device=_device_or_404(request, device_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


@extend_schema_field(
    {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,6})?)?$", "example": "22:00:00"}
)
class LocalTimeField(serializers.TimeField):
    """A time of day in the user's own time zone, without an offset.

    The schema says so: JSON Schema's `format: time` means an RFC 3339 time, which carries one.
    """


class PreferencesSerializer(serializers.Serializer):
    push_enabled = serializers.BooleanField()
    quiet_hours_start = LocalTimeField(allow_null=True)
    quiet_hours_end = LocalTimeField(allow_null=True)
    timezone = serializers.CharField(max_length=64)

    def validate_timezone(self, value: str) -> str:
        if value not in _time_zones():
            raise serializers.ValidationError(
                f"Unknown time zone {value!r}; use an IANA name (Europe/Paris)."
            )
        return value

    def validate(self, attrs: dict) -> dict:
        start = attrs.get("quiet_hours_start", getattr(self.instance, "quiet_hours_start", None))
        end = attrs.get("quiet_hours_end", getattr(self.instance, "quiet_hours_end", None))
        if (start is None) != (end is None):
            raise serializers.ValidationError("Set both quiet_hours_start and quiet_hours_end, or neither.")
        return attrs


class PreferencesApi(APIView):
    """Read or change the caller's push preferences (push on/off, quiet hours, time zone)."""

    permission_classes = [IsMobileUser]

    @extend_schema(responses=PreferencesSerializer)
    def get(self, request: Request) -> Response:
        preferences = selectors.preferences_for(mobile_user_id=request.user.pk)
        return Response(PreferencesSerializer(preferences).data)

    @extend_schema(request=PreferencesSerializer, responses=PreferencesSerializer)
    def patch(self, request: Request) -> Response:
        current = selectors.preferences_for(mobile_user_id=request.user.pk)
        serializer = PreferencesSerializer(current, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        preferences = preferences_update(mobile_user=request.user, **serializer.validated_data)
        return Response(PreferencesSerializer(preferences).data)
