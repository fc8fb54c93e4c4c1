"""The mobile WebSocket: delivery of messages, acks, read receipts and heartbeats.

Thin on purpose: parse and validate a frame, call a service in a thread, answer.
"""

from __future__ import annotations

import json
import logging
import time

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from apps.accounts.models import MobileUser
from apps.messaging import services
from apps.ops.logging import correlation_context

from . import presence
from .bridge import mobile_group
from .frames import message_frame

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
MAX_IDS_PER_FRAME = 1000
# Any frame proves the connection alive; refresh presence at most this often between pings.
HEARTBEAT_REFRESH_SECONDS = 10


def in_db_pool(func):
    """Run `func` (ORM work) in the thread pool.

    Channels' default runs every consumer's database call of a process on one shared thread,
    so one socket's catch-up or a burst of acks would stall every other socket's frames.
    """
    return database_sync_to_async(func, thread_sensitive=False)


def in_pool(func):
    """Run `func` (Redis only) in the thread pool, never queued behind database work."""
    return sync_to_async(func, thread_sensitive=False)


class MobileConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        principal = self.scope.get("principal")
        if not isinstance(principal, MobileUser):
            await self.accept()
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.mobile_id = principal.pk
        self.group = mobile_group(principal.pk)
        self.catchup_ids: set[str] = set()
        self.last_beat = 0.0
        # Join the group before announcing presence: a worker that sees us online must find
        # us in the group. Anything it sends during catch-up waits in the channel layer.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._beat()
        # Accepted only once presence is recorded: a client that sees the socket open is online.
        await self.accept()
        await self._catch_up()
        # Events queued during the catch-up are handled before this marker; after it, a frame
        # for a caught-up id is a genuine redelivery (ack timeout, stale sweep), not a duplicate.
        await self.channel_layer.send(self.channel_name, {"type": "catchup.done"})

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "group"):
            return
        await self.channel_layer.group_discard(self.group, self.channel_name)
        await in_db_pool(self._forget_connection)()

    def _forget_connection(self) -> None:
        presence.connection_closed(user_id=self.mobile_id, channel_name=self.channel_name)
        if not presence.is_online(self.mobile_id):
            # Unacked frames died with the socket: make them due again for the next connection.
            services.messages_release_unacked(recipient_ids=[self.mobile_id], reason="connection closed")

    async def _beat(self) -> None:
        self.last_beat = time.monotonic()
        await in_pool(presence.connection_seen)(user_id=self.mobile_id, channel_name=self.channel_name)

    async def _catch_up(self) -> None:
        """Send every undelivered message in seq order before anything newer."""
        after_seq = 0
        chunk = settings.MESSAGING_CATCHUP_CHUNK
        while True:
            payloads, last_seq = await in_db_pool(services.catchup_chunk)(
                recipient_id=self.mobile_id, after_seq=after_seq, limit=chunk
            )
            for payload in payloads:
                self.catchup_ids.add(payload["id"])
                await self.send_json(message_frame(payload))
            if last_seq is None:
                return
            after_seq = last_seq

    # --- frames from the client -------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if text_data is None:
            await self._error("invalid_frame", "Frames are JSON text.")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):  # deep nesting raises RecursionError, not ValueError
            await self._error("invalid_json", "The frame is not valid JSON.")
            return
        await self.receive_json(content)

    async def receive_json(self, content, **kwargs) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self._error("invalid_frame", "A frame is a JSON object with a string 'type'.")
            return
        kind = content["type"]
        if kind == "ping":
            await self._beat()
            await self.send_json({"type": "pong"})
            return
        if time.monotonic() - self.last_beat > HEARTBEAT_REFRESH_SECONDS:
            await self._beat()
        if kind in ("ack", "read"):
            await self._receipt(kind, content)
        elif kind in ("chat.send", "typing"):
            await self._error("unsupported", f"'{kind}' needs a conversation; chat is not available yet.")
        else:
            await self._error("unknown_type", f"Unknown frame type {kind!r}.")

    async def _receipt(self, kind: str, content: dict) -> None:
        ids = content.get("message_ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS_PER_FRAME:
            await self._error(
                "invalid_frame", f"'message_ids' must be a list of 1 to {MAX_IDS_PER_FRAME} ids."
            )
            return
        service = services.messages_acknowledge if kind == "ack" else services.messages_mark_read
        await in_db_pool(service)(recipient_id=self.mobile_id, message_ids=ids)

    async def _error(self, code: str, detail: str) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail})

    # --- events from the channel layer ------------------------------------------------------

    async def catchup_done(self, event: dict) -> None:
        self.catchup_ids.clear()

    async def deliver_messages(self, event: dict) -> None:
        with correlation_context(event.get("correlation_id", "")):
            for payload in event["messages"]:
                if payload["id"] in self.catchup_ids:
                    # Already written by the catch-up of this connection.
                    self.catchup_ids.discard(payload["id"])
                    continue
                await self.send_json(message_frame(payload))
            logger.debug("frames.written", extra={"count": len(event["messages"])})
