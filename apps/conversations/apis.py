"""Conversation endpoints, for senders (with the `chat` permission) and mobile users alike.

Each caller sees only its own conversations: anything else is 404.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.models import MobileUser, PartyKind, User
from apps.common.pagination import PagePagination
from apps.common.serializers import represent
from apps.messaging.flow import chat_sends_admit
from apps.messaging.inputs import MessageContentInputSerializer, phone_field

from .models import Conversation, ConversationStatus
from .selectors import conversation_for, conversation_list_for, conversation_messages, unread_totals_for
from .serializers import ChatMessageSerializer, ConversationSerializer
from .services import (
    conversation_archive,
    conversation_close,
    conversation_get_or_create,
    conversation_mark_read,
    conversation_message_send,
)


class CanChat(BasePermission):
    """Mobile users chat in their conversations; senders need the `chat` permission."""

    message = "You need the 'chat' permission."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if isinstance(user, MobileUser):
            return True
        return isinstance(user, User) and user.has_perm("accounts.chat")


class MessageCursorPagination(CursorPagination):
    """Newest first; `cursor` is opaque and stable while new messages arrive."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def _represent(request: Request, conversation: Conversation) -> dict:
    return ConversationSerializer(conversation, context={"side": request.user.party_kind}).data


def _own(request: Request, conversation_id: str) -> Conversation:
    conversation = conversation_for(principal=request.user, conversation_id=conversation_id)
    if conversation is None:
        raise NotFound("No conversation of yours has this id.")
    return conversation


class ConversationsApi(APIView):
    permission_classes = [CanChat]
    # Read by GET and by the schema generator, which then documents the paginated envelope.
    pagination_class = PagePagination

    class InputSerializer(serializers.Serializer):
        mobile_phone_number = serializers.CharField(max_length=32)

        class Meta:
            ref_name = "ConversationStart"

        def validate_mobile_phone_number(self, value: str) -> str:
            return phone_field(value)

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=ConversationStatus.choices, required=False)

    @extend_schema(
        request=InputSerializer,
        responses={200: ConversationSerializer, 201: ConversationSerializer},
        tags=["senders"],  # mobile users list and read conversations; only senders start them
    )
    def post(self, request: Request) -> Response:
        """Start a conversation with a mobile user, or return the open one (get-or-create)."""
        if request.user.party_kind != PartyKind.BUSINESS:
            raise PermissionDenied("Conversations are started by business users.")
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation, created = conversation_get_or_create(
            business=request.user, mobile_phone_number=serializer.validated_data["mobile_phone_number"]
        )
        conversation = conversation_for(principal=request.user, conversation_id=conversation.pk)
        return Response(
            _represent(request, conversation),
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )

    @extend_schema(parameters=[FilterSerializer], responses=ConversationSerializer(many=True))
    def get(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        conversations = conversation_list_for(principal=request.user, **filters.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(conversations, request, view=self)
        side = request.user.party_kind
        return paginator.get_paginated_response(
            ConversationSerializer(page, many=True, context={"side": side}).data
        )


class ConversationDetailApi(APIView):
    permission_classes = [CanChat]

    @extend_schema(responses=ConversationSerializer)
    def get(self, request: Request, conversation_id: str) -> Response:
        return Response(_represent(request, _own(request, conversation_id)))


class ConversationMessagesApi(APIView):
    permission_classes = [CanChat]
    pagination_class = MessageCursorPagination

    class InputSerializer(MessageContentInputSerializer):
        class Meta:
            ref_name = "ChatMessageSend"

    @extend_schema(responses=ChatMessageSerializer(many=True))
    def get(self, request: Request, conversation_id: str) -> Response:
        """The conversation's messages, newest first, with cursor pagination."""
        conversation = _own(request, conversation_id)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(
            conversation_messages(conversation=conversation), request, view=self
        )
        return paginator.get_paginated_response(ChatMessageSerializer(page, many=True).data)

    @extend_schema(request=InputSerializer, responses={202: ChatMessageSerializer})
    def post(self, request: Request, conversation_id: str) -> Response:
        """Send a chat message: persisted before this answers, delivered after commit."""
        serializer = self.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        chat_sends_admit(author=request.user)
        message = conversation_message_send(
            conversation_id=conversation_id, author=request.user, **serializer.validated_data
        )
        return Response(represent(ChatMessageSerializer, message), status=status.HTTP_202_ACCEPTED)


class ConversationReadApi(APIView):
    permission_classes = [CanChat]

    @extend_schema(
        request=None, responses=inline_serializer("ReadResult", {"read": serializers.IntegerField()})
    )
    def post(self, request: Request, conversation_id: str) -> Response:
        """Mark every message addressed to the caller in this conversation read."""
        read = conversation_mark_read(conversation_id=conversation_id, reader=request.user)
        return Response({"read": read})


class ConversationArchiveApi(APIView):
    permission_classes = [CanChat]

    @extend_schema(request=None, responses=ConversationSerializer)
    def post(self, request: Request, conversation_id: str) -> Response:
        conversation = conversation_archive(conversation_id=conversation_id, participant=request.user)
        return Response(_represent(request, _own(request, conversation.pk)))


class ConversationCloseApi(APIView):
    permission_classes = [CanChat]

    @extend_schema(request=None, responses=ConversationSerializer)
    def post(self, request: Request, conversation_id: str) -> Response:
        conversation = conversation_close(conversation_id=conversation_id, participant=request.user)
        return Response(_represent(request, _own(request, conversation.pk)))


class UnreadCountApi(APIView):
    permission_classes = [CanChat]

    @extend_schema(
        responses=inline_serializer(
            "UnreadCount",
            {"conversations": serializers.IntegerField(), "messages": serializers.IntegerField()},
        )
    )
    def get(self, request: Request) -> Response:
        """How many conversations have unread messages for the caller, and how many messages."""
        return Response(unread_totals_for(principal=request.user))
