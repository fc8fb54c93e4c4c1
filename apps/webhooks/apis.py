"""Webhook endpoints of senders (SPEC.md section 8): each sender sees only its own (404 otherwise)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import IsSender
from apps.common.pagination import PagePagination

from . import selectors
from .models import EventType, WebhookEndpoint
from .serializers import (
    WebhookDeliverySerializer,
    WebhookEndpointSerializer,
    WebhookEndpointWithSecretSerializer,
)
from .services import endpoint_create, endpoint_delete, endpoint_update, event_redeliver, secret_rotate

URL_MAX_LENGTH = 2000


def _events_field(**kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices),
        allow_empty=False,
        min_length=1,
        max_length=20,
        **kwargs,
    )


def _own(request: Request, endpoint_id: int) -> WebhookEndpoint:
    endpoint = selectors.endpoint_for(owner=request.user, endpoint_id=endpoint_id)
    if endpoint is None:
        raise NotFound("No webhook endpoint of yours has this id.")
    return endpoint


class WebhookListCreateApi(APIView):
    """Register a webhook endpoint (the answer carries its secret) or list the caller's."""

    permission_classes = [IsSender]
    pagination_class = PagePagination

    class InputSerializer(serializers.Serializer):
        url = serializers.URLField(max_length=URL_MAX_LENGTH)
        events = _events_field()
        description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

        class Meta:
            ref_name = "WebhookEndpointCreate"

    @extend_schema(request=InputSerializer, responses={201: WebhookEndpointWithSecretSerializer})
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoint_create(owner=request.user, **serializer.validated_data)
        return Response(WebhookEndpointWithSecretSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses=WebhookEndpointSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.endpoints_for(owner=request.user), request, view=self)
        return paginator.get_paginated_response(WebhookEndpointSerializer(page, many=True).data)


class WebhookDetailApi(APIView):
    """Show, change (url, events, description, is_active) or remove one of the caller's endpoints."""

    permission_classes = [IsSender]

    class UpdateInputSerializer(serializers.Serializer):
        url = serializers.URLField(max_length=URL_MAX_LENGTH, required=False)
        events = _events_field(required=False)
        description = serializers.CharField(max_length=500, required=False, allow_blank=True)
        is_active = serializers.BooleanField(required=False)

        class Meta:
            ref_name = "WebhookEndpointUpdate"

    @extend_schema(responses=WebhookEndpointSerializer)
    def get(self, request: Request, endpoint_id: int) -> Response:
        return Response(WebhookEndpointSerializer(_own(request, endpoint_id)).data)

    @extend_schema(request=UpdateInputSerializer, responses=WebhookEndpointSerializer)
    def patch(self, request: Request, endpoint_id: int) -> Response:
        endpoint = _own(request, endpoint_id)
        serializer = self.UpdateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint = endpoint_update(endpoint=endpoint, **serializer.validated_data)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, endpoint_id: int) -> Response:
        endpoint_delete(endpoint=_own(request, endpoint_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretApi(APIView):
    """Replace the endpoint's secret; the answer is the only place the new one is shown."""

    permission_classes = [IsSender]

    @extend_schema(request=None, responses=WebhookEndpointWithSecretSerializer)
    def post(self, request: Request, endpoint_id: int) -> Response:
        endpoint = secret_rotate(endpoint=_own(request, endpoint_id))
        return Response(WebhookEndpointWithSecretSerializer(endpoint).data)


class WebhookDeliveriesApi(APIView):
    """The endpoint's delivery attempts, newest first (given-up events show outcome `gave_up`)."""

    permission_classes = [IsSender]
    pagination_class = PagePagination

    @extend_schema(responses=WebhookDeliverySerializer(many=True))
    def get(self, request: Request, endpoint_id: int) -> Response:
        endpoint = _own(request, endpoint_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(selectors.deliveries_for(endpoint=endpoint), request, view=self)
        return paginator.get_paginated_response(WebhookDeliverySerializer(page, many=True).data)


class WebhookRedeliverApi(APIView):
    """Send the event of one delivery attempt again, now (same webhook-id); 202."""

    permission_classes = [IsSender]

    @extend_schema(
        request=None,
        responses={
            202: inline_serializer(
                "WebhookRedelivery", {"event_id": serializers.UUIDField(), "status": serializers.CharField()}
            )
        },
    )
    def post(self, request: Request, endpoint_id: int, delivery_id: int) -> Response:
        endpoint = _own(request, endpoint_id)
        delivery = selectors.delivery_for(endpoint=endpoint, delivery_id=delivery_id)
        if delivery is None:
            raise NotFound("No delivery of this endpoint has this id.")
        event = event_redeliver(delivery=delivery)
        return Response(
            {"event_id": str(event.event_id), "status": event.status}, status=status.HTTP_202_ACCEPTED
        )
