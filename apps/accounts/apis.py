"""Account endpoints: WebSocket tickets."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .services import realtime_ticket_issue


class RealtimeTicketApi(APIView):
    """Issue a single-use ticket (60 s) for opening a WebSocket from a browser."""

    class OutputSerializer(serializers.Serializer):
        ticket = serializers.CharField()
        expires_at = serializers.DateTimeField()

    @extend_schema(request=None, responses={201: OutputSerializer})
    def post(self, request: Request) -> Response:
        ticket, expires_at = realtime_ticket_issue(principal=request.user)
        data = self.OutputSerializer({"ticket": ticket, "expires_at": expires_at}).data
        return Response(data, status=status.HTTP_201_CREATED)
