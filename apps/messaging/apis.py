"""Senders' message and dead-letter endpoints: parse, call a service or selector, answer."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import CanManageDeadLetters, CanSendMessage, sender_permission
from apps.common.ids import parse_uuid
from apps.common.pagination import PagePagination
from apps.common.parsers import BulkJSONParser
from apps.common.serializers import represent

from . import services
from .content import MAX_CONTENT_LENGTH, normalize_content
from .flow import sends_admit
from .inputs import (
    MAX_TTL_SECONDS,
    OneWayMessageInputSerializer,
    SendAtField,
    one_way_items_validate,
    phone_field,
)
from .models import ContentType, DeadLetter, Kind, Priority, Status
from .selectors import (
    broadcast_get_for_sender,
    broadcast_progress,
    dead_letters_visible_to,
    message_get_for_sender,
    message_list_for_sender,
)
from .serializers import (
    DeadLetterDetailSerializer,
    DeadLetterSerializer,
    MessageDetailSerializer,
    MessageSerializer,
)
from .services import (
    dead_letters_delete,
    dead_letters_requeue,
    message_send,
    message_send_idempotent,
    request_hash,
)

CanSendBroadcast = sender_permission("send_broadcast")
# 1 to 255 printable characters (documented as printable ASCII, at least one not a space).
IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]*[!-~][ -~]*$"},
    OpenApiParameter.HEADER,
    description="Replaying a key with the same body returns the original answer (200); "
    "with another body, 422. Scoped to the sender, kept at least 24 h.",
)


class MessageSendApi(APIView):
    """Accept a one-way message: persisted before this answers, delivered after commit."""

    permission_classes = [CanSendMessage]

    @extend_schema(
        request=OneWayMessageInputSerializer,
        responses={200: MessageSerializer, 202: MessageSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def post(self, request: Request) -> Response:
        serializer = OneWayMessageInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        sends_admit(sender=request.user, count=1)
        key = request.headers.get("Idempotency-Key")
        if key is None:
            message, created = message_send(sender=request.user, **data), True
        else:
            # Control characters (NUL above all, which PostgreSQL refuses) would be a 500 later.
            if not key.strip() or len(key) > 255 or not key.isprintable():
                raise ValidationError({"Idempotency-Key": ["Must be 1 to 255 printable characters."]})
            message, created = message_send_idempotent(
                sender=request.user, idempotency_key=key, body_hash=request_hash(data), **data
            )
        return Response(
            represent(MessageSerializer, message),
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        )


class MessageListApi(APIView):
    permission_classes = [CanSendMessage]
    # Read by GET and by the schema generator, which then documents the paginated envelope.
    pagination_class = PagePagination

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=Status.choices, required=False)
        recipient = serializers.CharField(required=False)
        kind = serializers.ChoiceField(choices=Kind.choices, required=False)
        created_after = serializers.DateTimeField(required=False)
        created_before = serializers.DateTimeField(required=False)

        def validate_recipient(self, value: str) -> str:
            return phone_field(value)

    @extend_schema(parameters=[FilterSerializer], responses=MessageSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = dict(filters.validated_data)
        if "recipient" in params:
            params["recipient_phone"] = params.pop("recipient")
        messages = message_list_for_sender(sender=request.user, **params)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(messages, request, view=self)
        return paginator.get_paginated_response(MessageSerializer(page, many=True).data)


class MessageDetailApi(APIView):
    permission_classes = [CanSendMessage]

    @extend_schema(responses=MessageDetailSerializer)
    def get(self, request: Request, message_id: str) -> Response:
        message = message_get_for_sender(sender=request.user, message_id=message_id)
        if message is None:
            raise NotFound("No message with this id among yours.")
        return Response(MessageDetailSerializer(message).data)


class MessageCancelApi(APIView):
    """Withdraw a message no device has received: 200 `canceled`, else 409 naming its status."""

    permission_classes = [CanSendMessage]

    @extend_schema(request=None, responses={200: MessageSerializer})
    def post(self, request: Request, message_id: str) -> Response:
        pk = parse_uuid(message_id)
        if pk is None:
            raise NotFound("No message with this id among yours.")
        message = services.message_cancel(sender=request.user, message_id=pk)
        return Response(represent(MessageSerializer, message))


def _dead_letter_or_404(request: Request, dead_letter_id: str) -> DeadLetter:
    # isdigit() alone also accepts characters such as "²" that int() refuses.
    if not (dead_letter_id.isascii() and dead_letter_id.isdigit()):
        raise NotFound("No dead letter with this id among yours.")
    return get_object_or_404(dead_letters_visible_to(user=request.user), pk=int(dead_letter_id))


class DeadLetterListApi(APIView):
    permission_classes = [CanManageDeadLetters]
    # Read by GET and by the schema generator, which then documents the paginated envelope.
    pagination_class = PagePagination

    @extend_schema(responses=DeadLetterSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(dead_letters_visible_to(user=request.user), request, view=self)
        return paginator.get_paginated_response(DeadLetterSerializer(page, many=True).data)


class DeadLetterDetailApi(APIView):
    permission_classes = [CanManageDeadLetters]

    @extend_schema(responses=DeadLetterDetailSerializer)
    def get(self, request: Request, dead_letter_id: str) -> Response:
        return Response(DeadLetterDetailSerializer(_dead_letter_or_404(request, dead_letter_id)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, dead_letter_id: str) -> Response:
        dead_letter = _dead_letter_or_404(request, dead_letter_id)
        dead_letters_delete(dead_letters=[dead_letter], actor=request.user, via="api")
        return Response(status=status.HTTP_204_NO_CONTENT)


class RequeuedSerializer(serializers.Serializer):
    requeued = serializers.ListField(child=serializers.UUIDField())


class DeadLetterRequeueApi(APIView):
    permission_classes = [CanManageDeadLetters]

    @extend_schema(request=None, responses={202: RequeuedSerializer})
    def post(self, request: Request, dead_letter_id: str) -> Response:
        dead_letter = _dead_letter_or_404(request, dead_letter_id)
        requeued = dead_letters_requeue(
            dead_letters=DeadLetter.objects.filter(pk=dead_letter.pk), actor=request.user, via="api"
        )
        return Response({"requeued": [str(pk) for pk in requeued]}, status=status.HTTP_202_ACCEPTED)


class DeadLetterBulkRequeueApi(APIView):
    permission_classes = [CanManageDeadLetters]

    class InputSerializer(serializers.Serializer):
        ids = serializers.ListField(
            child=serializers.IntegerField(min_value=1), min_length=1, max_length=1000
        )

    @extend_schema(
        request=InputSerializer, responses={202: RequeuedSerializer}, operation_id="dead_letters_bulk_requeue"
    )
    def post(self, request: Request) -> Response:
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        ids = set(serializer.validated_data["ids"])
        visible = dead_letters_visible_to(user=request.user).filter(pk__in=ids)
        found = set(visible.values_list("pk", flat=True))
        if found != ids:
            raise NotFound(f"No dead letter among yours with id(s) {sorted(ids - found)}.")
        requeued = dead_letters_requeue(dead_letters=visible, actor=request.user, via="api")
        return Response({"requeued": [str(pk) for pk in requeued]}, status=status.HTTP_202_ACCEPTED)


class MessagesApi(MessageSendApi, MessageListApi):
    """`/messages/`: POST sends (MessageSendApi), GET lists (MessageListApi)."""


# --- Volume: batch and broadcast ------------------------------------------------------------


class BatchSendApi(APIView):
    """Accept up to 1,000 one-way messages: all valid and stored in one transaction, or none."""

    permission_classes = [CanSendMessage]
    parser_classes = [BulkJSONParser]

    class BatchOutputSerializer(serializers.Serializer):
        total = serializers.IntegerField()
        ids = serializers.ListField(child=serializers.UUIDField())

    @extend_schema(
        request=inline_serializer(
            "MessageBatch",
            # A list field, so that the schema shows the 1..BATCH_MAX bounds the view checks.
            fields={
                "messages": serializers.ListField(
                    child=OneWayMessageInputSerializer(), min_length=1, max_length=services.BATCH_MAX
                )
            },
        ),
        responses={200: BatchOutputSerializer, 202: BatchOutputSerializer},
        parameters=[IDEMPOTENCY_KEY_PARAMETER],
    )
    def post(self, request: Request) -> Response:
        items = request.data.get("messages") if isinstance(request.data, dict) else None
        if not isinstance(items, list) or not items:
            raise ValidationError({"messages": ["Give a non-empty list of messages."]})
        if len(items) > services.BATCH_MAX:
            raise ValidationError({"messages": [f"At most {services.BATCH_MAX:,} messages per batch."]})
        valid = one_way_items_validate(items)
        if valid is None:  # an item DRF must look at: it validates them all and names the problems
            serializer = OneWayMessageInputSerializer(data=items, many=True)
            if not serializer.is_valid():
                errors = {str(index): error for index, error in serializer.errors.items()}
                raise ValidationError({"messages": errors})
            valid = [dict(item) for item in serializer.validated_data]
        sends_admit(sender=request.user, count=len(valid))
        key = request.headers.get("Idempotency-Key")
        try:
            if key is None:
                ids, created = (
                    [m.pk for m in services.messages_send_batch(sender=request.user, items=valid)],
                    True,
                )
            else:
                _check_idempotency_key(key)
                ids, created = services.messages_send_batch_idempotent(
                    sender=request.user,
                    idempotency_key=key,
                    body_hash=request_hash({"messages": valid}),
                    items=valid,
                )
        except services.BatchInvalid as exc:
            raise ValidationError({"messages": {str(i): e for i, e in exc.errors.items()}}) from exc
        return Response(
            {"total": len(ids), "ids": [str(pk) for pk in ids]},
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        )


def _check_idempotency_key(key: str) -> None:
    # As for a single send: control characters (NUL above all) would be a 500 later.
    if not key.strip() or len(key) > 255 or not key.isprintable():
        raise ValidationError({"Idempotency-Key": ["Must be 1 to 255 printable characters."]})


class BroadcastInputSerializer(serializers.Serializer):
    recipient_phone_numbers = serializers.ListField(
        child=serializers.CharField(max_length=32), required=False, min_length=1, max_length=100_000
    )
    all = serializers.BooleanField(required=False, default=False)
    subject = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    content = serializers.CharField(max_length=MAX_CONTENT_LENGTH, trim_whitespace=False)
    content_type = serializers.ChoiceField(choices=ContentType.choices, default=ContentType.TEXT)
    priority = serializers.ChoiceField(choices=Priority.choices, default=Priority.NORMAL)
    ttl_seconds = serializers.IntegerField(
        min_value=1, max_value=MAX_TTL_SECONDS, required=False, allow_null=True
    )
    send_at = SendAtField(required=False, allow_null=True)
    attachment_ids = serializers.ListField(child=serializers.UUIDField(), required=False, default=list)

    def validate_recipient_phone_numbers(self, value: list[str]) -> list[str]:
        return [phone_field(v) for v in value]

    def validate_attachment_ids(self, value: list) -> list:
        # An upload belongs to one message; a broadcast would need a copy per recipient.
        if value:
            raise serializers.ValidationError("Broadcasts cannot carry attachments.")
        return value

    def validate(self, data: dict) -> dict:
        if data["all"] == ("recipient_phone_numbers" in data):
            raise serializers.ValidationError('Give either recipient_phone_numbers or "all": true.')
        try:
            data["content"] = normalize_content(data["content"], data["content_type"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"content": exc.messages}) from exc
        data.pop("attachment_ids", None)
        return data


class BroadcastOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    total = serializers.IntegerField()


class BroadcastCreateApi(APIView):
    """Accept one content for many recipients; the messages are created by background tasks."""

    permission_classes = [CanSendBroadcast]
    parser_classes = [BulkJSONParser]

    @extend_schema(request=BroadcastInputSerializer, responses={202: BroadcastOutputSerializer})
    def post(self, request: Request) -> Response:
        serializer = BroadcastInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data.pop("all")
        recipient_ids, unknown = services.broadcast_audience(
            recipient_phone_numbers=data.pop("recipient_phone_numbers", None)
        )
        if unknown:
            raise ValidationError(
                {
                    "recipient_phone_numbers": [
                        f"No active mobile user has the phone number(s) {', '.join(unknown[:20])}."
                    ]
                }
            )
        total = len(recipient_ids) if recipient_ids is not None else services.active_audience_size()
        sends_admit(sender=request.user, count=max(total, 1))
        broadcast = services.broadcast_create(sender=request.user, recipient_ids=recipient_ids, **data)
        return Response({"id": str(broadcast.pk), "total": broadcast.total}, status=status.HTTP_202_ACCEPTED)


class BroadcastDetailApi(APIView):
    permission_classes = [CanSendBroadcast]

    class BroadcastProgressSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        status = serializers.CharField()
        total = serializers.IntegerField()
        expanded = serializers.IntegerField()
        queued = serializers.IntegerField()
        delivered = serializers.IntegerField()
        failed = serializers.IntegerField()
        priority = serializers.CharField()
        created_at = serializers.DateTimeField()
        expanded_at = serializers.DateTimeField(allow_null=True)

    @extend_schema(responses=BroadcastProgressSerializer)
    def get(self, request: Request, broadcast_id: str) -> Response:
        broadcast = broadcast_get_for_sender(sender=request.user, broadcast_id=broadcast_id)
        if broadcast is None:
            raise NotFound("No broadcast with this id among yours.")
        data = {
            "id": broadcast.pk,
            "status": broadcast.status,
            "total": broadcast.total,
            "priority": broadcast.priority,
            "created_at": broadcast.created_at,
            "expanded_at": broadcast.expanded_at,
            **broadcast_progress(broadcast=broadcast),
        }
        return Response(self.BroadcastProgressSerializer(data).data)
