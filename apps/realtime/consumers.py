"""The WebSockets: `/ws/mobile/` and `/ws/business/`.

Both deliver messages (catch-up in seq order, then live), take acks, read receipts and
heartbeats, and carry chat: `chat.send`, `typing`, `status` receipts. Thin on purpose: parse and
validate a frame, call a service in a thread, answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from contextlib import nullcontext

from asgiref.sync import sync_to_async
from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from apps.accounts import presence
from apps.accounts.models import MobileUser, User
from apps.accounts.party import Party
from apps.common import metrics
from apps.common.errors import DomainError
from apps.common.logging import correlation_context
from apps.conversations.models import ConversationStatus
from apps.conversations.selectors import conversation_state_for
from apps.conversations.services import conversation_message_send
from apps.messaging import services
from apps.messaging.flow import chat_sends_admit
from apps.messaging.frames import message_payload
from apps.messaging.inputs import ChatSendInputSerializer, first_error
from apps.messaging.models import Status
from apps.messaging.selectors import parse_uuid

from .receipts import receipt_apply

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
# The token could not be checked (the database is down): retry later, like HTTP's 503. (RFC
# 6455's 1013 "Try Again Later" is one a server library may not send: autobahn refuses it.)
CLOSE_TRY_AGAIN_LATER = 4503
# A client that goes on flooding after its `rate_limited` answers, as 4401 mirrors HTTP's 401.
CLOSE_FLOODING = 4429
# Refusals counted within this many seconds for closing a flooding connection.
FLOOD_WINDOW_SECONDS = 10
MAX_IDS_PER_FRAME = 1000
# How many of the ids its client acknowledged a connection remembers (the newest).
ACKED_MEMORY = 2048
# Any frame proves the connection alive; refresh presence at most this often between pings.
HEARTBEAT_REFRESH_SECONDS = 10
MAX_CLIENT_ID_CHARS = 100
TYPING_REFUSED = {
    "not_found": "No conversation of yours has this id.",
    "conversation_closed": "This conversation is closed; it is read-only.",
}
# Typing: a repeated state is relayed at most this often per conversation; changes always go.
TYPING_REPEAT_SECONDS = 3
# Beyond this many typing frames per window, a connection gets `rate_limited` errors.
TYPING_BURST = 20
TYPING_WINDOW_SECONDS = 10
# The channels versions whose AsyncConsumer.dispatch ParticipantConsumer.dispatch restates
# (tests/ops/test_patches.py fails on others).
CHANNELS_TESTED = ("4.3.",)


def _frame_bytes(text_data: str | None, bytes_data: bytes | None) -> int:
    """Return the frame's size on the wire (text as UTF-8), or a lower bound far within the limit."""
    if text_data is None:
        return len(bytes_data or b"")
    if len(text_data) * 4 <= settings.REALTIME_MAX_FRAME_BYTES:
        return len(text_data)  # within the limit however wide its characters: no need to encode
    return len(text_data.encode("utf-8", "surrogatepass"))


def in_db_pool(func):
    """Run `func` (ORM work) in the thread pool.

    Channels' default runs every consumer's database call of a process on one shared thread,
    so one socket's catch-up or a burst of acks would stall every other socket's frames.
    """
    return database_sync_to_async(func, thread_sensitive=False)


def in_pool(func):
    """Run `func` (Redis only) in the thread pool, never queued behind database work."""
    return sync_to_async(func, thread_sensitive=False)


def sends_dropped_after_close(send):
    """Return `send` (the server's ASGI send) dropping a frame for a client that has just gone.

    A handler that awaited (the catch-up before a pong, the database before `chat.accepted`)
    may answer after its client closed: daphne still hands the frame to autobahn (its WebSocket
    library), which raises Disconnected, and the traceback would end the consumer. Nothing is
    lost by dropping the frame: the disconnect releases what was written and not acked.
    """

    async def send_unless_gone(message: dict) -> None:
        try:
            await send(message)
        except Disconnected:
            if message.get("type") != "websocket.send":
                raise
            logger.debug("websocket.send_after_close")

    return send_unless_gone


class ParticipantConsumer(AsyncJsonWebsocketConsumer):
    """A connection of one user of `principal_model`; its group is `<kind>.<id>`."""

    principal_model: type[User] | type[MobileUser]

    async def dispatch(self, message: dict) -> None:
        """Run the handler of `message`: channels' own dispatch, without its thread hop.

        Since 4.2, channels awaits `aclose_old_connections()` before every handler: a hop to the
        process's one thread-sensitive thread and back for every frame received and every event
        delivered (15 % of a web process's busy time while batches were delivered). It guards
        consumers that use the database on that thread; these never do: all their database work
        runs in `database_sync_to_async` (in_db_pool), which does that hygiene in its own thread.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def __call__(self, scope, receive, send) -> None:
        await super().__call__(scope, receive, sends_dropped_after_close(send))

    async def connect(self) -> None:
        principal = self.scope.get("principal")
        if not isinstance(principal, self.principal_model):
            await self.accept()
            unavailable = self.scope.get("auth_unavailable")
            await self.close(code=CLOSE_TRY_AGAIN_LATER if unavailable else CLOSE_UNAUTHENTICATED)
            return
        self.principal = principal
        self.party = Party.of(principal)
        self.group = self.party.group
        metrics.websocket_connections(1)
        self.catchup_ids: set[str] = set()
        # Ids this connection's client acknowledged, oldest first (at most ACKED_MEMORY).
        self.acked_here: OrderedDict[str, None] = OrderedDict()
        self.receipts_in_flight: set[asyncio.Future] = set()
        self.last_beat = 0.0
        self.can_chat = await in_db_pool(self._can_chat)()
        self.typing_sent: dict[str, tuple[bool, float]] = {}
        self.typing_window: list[float] = []
        # Every frame takes a token; the bucket refills at REALTIME_FRAMES_PER_SECOND.
        self.frame_tokens = float(settings.REALTIME_FRAME_BURST)
        self.frame_tokens_at = time.monotonic()
        # When recent frames were refused; full and young means the client keeps flooding.
        self.refusals: deque[float] = deque(maxlen=settings.REALTIME_FLOOD_CLOSE_AFTER)
        # Live deliveries that arrive during the catch-up wait here and follow it, in order
        # (None once it is over).
        self.held: list[dict] | None = []
        self.catch_up_task: asyncio.Future | None = None
        # Join the group before announcing presence: a worker that sees us online must find
        # us in the group. Anything it sends during catch-up is held until the catch-up is over.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self._beat()
        # Accepted only once presence is recorded: a client that sees the socket open is online.
        await self.accept()
        # The catch-up runs beside this consumer's frame loop, so the client's acks are recorded
        # while a long backlog is still being written (a ping is answered once it is over).
        self.catch_up_task = asyncio.ensure_future(self._catch_up_then_live())

    async def disconnect(self, code: int) -> None:
        if not hasattr(self, "group"):
            return
        if self.catch_up_task is not None and not self.catch_up_task.done():
            self.catch_up_task.cancel()
            await asyncio.gather(self.catch_up_task, return_exceptions=True)
        metrics.websocket_connections(-1)
        await self.channel_layer.group_discard(self.group, self.channel_name)
        await self._receipts_recorded()  # an ack in flight settles its message, not the release
        await in_db_pool(self._forget_connection)()

    def _can_chat(self) -> bool:
        return True

    def _forget_connection(self) -> None:
        presence.connection_closed(party=self.party, channel_name=self.channel_name)
        if not presence.is_online(self.party):
            # Unacked frames died with the socket: make them due again for the next connection.
            services.messages_release_unacked(recipients=[self.party], reason="connection closed")

    async def _beat(self) -> None:
        self.last_beat = time.monotonic()
        await in_pool(presence.connection_seen)(party=self.party, channel_name=self.channel_name)

    async def _catch_up_then_live(self) -> None:
        """Write the catch-up, then the deliveries held meanwhile; then deliver live."""
        try:
            await self._catch_up()
            while self.held:  # more may be held while these are written
                events, self.held = self.held, []
                for event in events:
                    await self._write_delivery(event)
            self.held = None
        except asyncio.CancelledError:
            raise
        except Exception:  # the database went away mid-way: the client reconnects and resumes
            logger.exception(
                "websocket.catch_up_failed", extra={"kind": self.party.kind.value, "user_id": self.party.id}
            )
            await self.close(code=CLOSE_TRY_AGAIN_LATER)
            return
        # Events queued before this marker are deduplicated against the caught-up ids; after it,
        # a frame for a caught-up id is a genuine redelivery (ack timeout, stale sweep).
        await self.channel_layer.send(self.channel_name, {"type": "catchup.done"})

    async def _catch_up(self) -> None:
        """Send every undelivered message in seq order before anything newer.

        The next chunk is claimed (in the database thread) while this one is written, so the
        socket does not wait for the database between chunks. A chunk claimed but not written
        (the socket closed meanwhile) is released like any unacked frame (_forget_connection).
        """
        chunk = settings.MESSAGING_CATCHUP_CHUNK
        claim = in_db_pool(services.catchup_chunk)
        next_chunk = asyncio.ensure_future(claim(recipient=self.party, after_seq=0, limit=chunk))
        try:
            while True:
                # Shielded: a close cancels this task, never a claim half-way (the claim's
                # messages must be `sent` before the close releases what was not acked).
                frames, last_seq = await asyncio.shield(next_chunk)
                if last_seq is not None:
                    next_chunk = asyncio.ensure_future(
                        claim(recipient=self.party, after_seq=last_seq, limit=chunk)
                    )
                for outgoing in frames:
                    if outgoing.pk is not None:  # None: a `skip` frame, nothing to deduplicate
                        self.catchup_ids.add(str(outgoing.pk))
                    await self.send(text_data=outgoing.frame)
                if last_seq is None:
                    return
        finally:
            if not next_chunk.done():
                # Cancelled or failed mid-way: let the claim finish before anything else runs.
                await asyncio.gather(next_chunk, return_exceptions=True)

    # --- frames from the client -------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None, **kwargs) -> None:
        if not await self._admit_frame():
            return
        if _frame_bytes(text_data, bytes_data) > settings.REALTIME_MAX_FRAME_BYTES:
            # A bad frame like any other: answered, the connection stays open. daphne's own cap
            # (messaging_project/web.py) is higher, because past it daphne can only drop the
            # connection (an application may not close with 1009).
            limit = settings.REALTIME_MAX_FRAME_BYTES
            await self._error("frame_too_large", f"Frames are at most {limit:,} bytes; this one was dropped.")
            return
        if text_data is None:
            await self._error("invalid_frame", "Frames are JSON text.")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):  # deep nesting raises RecursionError, not ValueError
            await self._error("invalid_json", "The frame is not valid JSON.")
            return
        await self.receive_json(content)

    async def _admit_frame(self) -> bool:
        """Take a token for this frame; answer `rate_limited`, or close a persistent flooder."""
        now = time.monotonic()
        rate, burst = settings.REALTIME_FRAMES_PER_SECOND, settings.REALTIME_FRAME_BURST
        self.frame_tokens = min(burst, self.frame_tokens + (now - self.frame_tokens_at) * rate)
        self.frame_tokens_at = now
        if self.frame_tokens >= 1:
            self.frame_tokens -= 1
            return True
        self.refusals.append(now)
        if len(self.refusals) == self.refusals.maxlen and now - self.refusals[0] < FLOOD_WINDOW_SECONDS:
            logger.warning(
                "websocket.flooding", extra={"kind": self.party.kind.value, "user_id": self.party.id}
            )
            await self.close(code=CLOSE_FLOODING)
            return False
        await self._error(
            "rate_limited",
            f"More than {rate:g} frames a second; this frame was dropped.",
            retry_after=max(1, round((1 - self.frame_tokens) / rate)),
        )
        return False

    async def receive_json(self, content, **kwargs) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("type"), str):
            await self._error("invalid_frame", "A frame is a JSON object with a string 'type'.")
            return
        kind = content["type"]
        handler = FRAME_HANDLERS.get(kind)
        if handler is None:
            await self._error("unknown_type", f"Unknown frame type {kind!r}.")
            return
        if kind != "ping" and time.monotonic() - self.last_beat > HEARTBEAT_REFRESH_SECONDS:
            await self._beat()
        if kind in CHAT_FRAMES and not self.can_chat:
            extra = {"client_id": content.get("client_id")} if kind == "chat.send" else {}
            await self._error("forbidden", "You need the 'chat' permission.", **extra)
            return
        await handler(self, kind, content)

    async def _ping(self, kind: str, content: dict) -> None:
        await self._beat()
        await self._receipts_recorded()
        if self.catch_up_task is not None and not self.catch_up_task.done():
            # A pong also says the catch-up is over: clients (and tests) use ping/pong as the
            # barrier after which whatever arrives is live. Acks before the ping go on at once.
            await asyncio.gather(asyncio.shield(self.catch_up_task), return_exceptions=True)
        await self.send_json({"type": "pong"})

    async def _receipt(self, kind: str, content: dict) -> None:
        ids = content.get("message_ids")
        if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS_PER_FRAME:
            await self._error(
                "invalid_frame", f"'message_ids' must be a list of 1 to {MAX_IDS_PER_FRAME} ids."
            )
            return
        target = Status.DELIVERED if kind == "ack" else Status.READ
        self._remember_acked(ids)
        # Recorded with the process's other receipts (realtime.receipts), while this socket goes
        # on: a delivery for it does not wait for the transaction that records its last ack. A
        # ping waits for them (a pong says that every receipt before it is recorded), and so
        # does the disconnect, before it releases what was not acked.
        applying = asyncio.ensure_future(receipt_apply(services.Receipt(self.party, target, ids)))
        self.receipts_in_flight.add(applying)
        applying.add_done_callback(self._receipt_done)

    def _receipt_done(self, applying: asyncio.Future) -> None:
        self.receipts_in_flight.discard(applying)
        if applying.cancelled() or applying.exception() is None:
            return
        # The database went away: the client reconnects and resends what it still holds (the
        # ack timeout redelivers what it does not).
        logger.error(
            "websocket.receipt_failed",
            exc_info=applying.exception(),
            extra={"kind": self.party.kind.value, "user_id": self.party.id},
        )
        self.closing = asyncio.ensure_future(self.close(code=CLOSE_TRY_AGAIN_LATER))

    async def _receipts_recorded(self) -> None:
        """Wait until every receipt this socket has handed in is recorded (or has failed)."""
        while self.receipts_in_flight:
            await asyncio.gather(*self.receipts_in_flight, return_exceptions=True)

    def _remember_acked(self, ids: list) -> None:
        for pk in ids:
            if isinstance(pk, str):
                self.acked_here[pk] = None
                self.acked_here.move_to_end(pk)
        while len(self.acked_here) > ACKED_MEMORY:
            self.acked_here.popitem(last=False)

    async def _chat_send(self, kind: str, content: dict) -> None:
        client_id = content.get("client_id")
        if client_id is not None and (not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID_CHARS):
            await self._error(
                "invalid_frame", f"'client_id' must be a string of at most {MAX_CLIENT_ID_CHARS}."
            )
            return
        # The same input serializer as `POST conversations/{id}/messages/`.
        frame = ChatSendInputSerializer(data=content)
        if not frame.is_valid():
            await self._error("invalid_frame", first_error(frame.errors), client_id=client_id)
            return
        fields = dict(frame.validated_data)
        try:
            payload = await in_db_pool(self._store_chat)(fields)
        except DomainError as exc:
            retry = {"retry_after": exc.retry_after_seconds} if exc.retry_after is not None else {}
            await self._error(exc.code, exc.detail, client_id=client_id, **retry)
            return
        await self.send_json({"type": "chat.accepted", "client_id": client_id, "message": payload})

    def _store_chat(self, fields: dict) -> dict:
        # The same admission as `POST conversations/{id}/messages/`: a socket is no way
        # around the author's rate limit or the backlog's backpressure.
        chat_sends_admit(author=self.principal)
        message = conversation_message_send(author=self.principal, **fields)
        return message_payload(message)

    async def _typing(self, kind: str, content: dict) -> None:
        conversation_id, is_typing = content.get("conversation_id"), content.get("is_typing")
        if parse_uuid(conversation_id) is None or not isinstance(is_typing, bool):
            await self._error(
                "invalid_frame", "'typing' needs a 'conversation_id' (UUID) and a boolean 'is_typing'."
            )
            return
        now = time.monotonic()
        self.typing_window = [t for t in self.typing_window if now - t < TYPING_WINDOW_SECONDS]
        if len(self.typing_window) >= TYPING_BURST:
            await self._error("rate_limited", "Too many typing frames; slow down.")
            return
        self.typing_window.append(now)
        conversation_id = str(parse_uuid(conversation_id))
        # Asked for every frame (one indexed row): a conversation closed since the last frame,
        # from any process, is refused at once rather than after a cache expires.
        peer = await in_db_pool(self._typing_peer)(conversation_id)
        if peer in TYPING_REFUSED:
            await self._error(peer, TYPING_REFUSED[peer])
            return
        last = self.typing_sent.get(conversation_id)
        if last is not None and last[0] == is_typing and now - last[1] < TYPING_REPEAT_SECONDS:
            return  # the peer already knows; never persisted, so nothing is lost
        self.typing_sent[conversation_id] = (is_typing, now)
        frame = {"type": "typing", "conversation_id": conversation_id, "is_typing": is_typing}
        await self.channel_layer.group_send(peer, {"type": "deliver.frames", "frames": [frame]})

    def _typing_peer(self, conversation_id: str) -> str:
        """Return the other participant's group, or the error code refusing the typing frame."""
        state = conversation_state_for(principal=self.principal, conversation_id=conversation_id)
        if state is None:
            return "not_found"
        status, business_id, mobile_id = state
        if status == ConversationStatus.CLOSED:
            return "conversation_closed"
        if self.party.is_mobile:
            return Party.business(business_id).group
        return Party.mobile(mobile_id).group

    async def _error(self, code: str, detail: str, **extra) -> None:
        await self.send_json({"type": "error", "code": code, "detail": detail, **extra})

    # --- events from the channel layer ------------------------------------------------------

    async def catchup_done(self, event: dict) -> None:
        self.catchup_ids.clear()

    async def deliver_messages(self, event: dict) -> None:
        if self.held is not None:  # the catch-up is still being written: these follow it
            self.held.append(event)
            return
        await self._write_delivery(event)

    async def _write_delivery(self, event: dict) -> None:
        # The sending request's id, when one sent it; a worker's claim of a lane's messages has
        # none (each message's own id is in its rows and their status logs), and a fresh id per
        # event would cost a uuid4 per frame event for nothing.
        correlation_id = event.get("correlation_id")
        with correlation_context(correlation_id) if correlation_id else nullcontext():
            acked_again = []
            for message in event["messages"]:
                if message["id"] in self.catchup_ids:
                    # Already written by the catch-up of this connection.
                    self.catchup_ids.discard(message["id"])
                    continue
                if message["id"] in self.acked_here:
                    # The client has it and said so here: a worker's write that raced this
                    # connection's catch-up. Recording the ack again (idempotent) settles the
                    # message instead of showing the app a message it already acknowledged.
                    acked_again.append(message["id"])
                    continue
                await self.send(text_data=message["frame"])
            if acked_again:
                await receipt_apply(services.Receipt(self.party, Status.DELIVERED, acked_again))
            logger.debug("frames.written", extra={"count": len(event["messages"])})

    async def deliver_frames(self, event: dict) -> None:
        """Write ready-made frames: `status` receipts and `typing`."""
        for frame in event["frames"]:
            await self.send_json(frame)

    async def session_close(self, event: dict) -> None:
        """Close this connection: its user's credentials were revoked (erasure)."""
        await self.close(code=event.get("code", CLOSE_UNAUTHENTICATED))


# Frame type -> handler; `chat.send` and `typing` need the `chat` permission.
FRAME_HANDLERS = {
    "ping": ParticipantConsumer._ping,
    "ack": ParticipantConsumer._receipt,
    "read": ParticipantConsumer._receipt,
    "chat.send": ParticipantConsumer._chat_send,
    "typing": ParticipantConsumer._typing,
}
CHAT_FRAMES = frozenset({"chat.send", "typing"})


class MobileConsumer(ParticipantConsumer):
    principal_model = MobileUser


class BusinessConsumer(ParticipantConsumer):
    principal_model = User

    def _can_chat(self) -> bool:
        return self.principal.has_perm("accounts.chat")
