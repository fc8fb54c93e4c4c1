"""Writes for messaging, by capability; this module is their one public face.

- send: a one-way send, a chat message's store, the idempotent send (idempotency);
- batch and broadcast: many messages at once;
- schedule: scheduled send (promotion when due) and cancel, with `skip` frames;
- deliver and chunks: a lane's due messages, a message, a backlog, a catch-up;
- receipts: acks and reads from the devices;
- failures: release, fail, dead letters, requeue;
- sweeps: the periodic jobs; retention: the purge of old terminal messages.

Every status change goes through `lifecycle.transition`. Every task is enqueued after the
transaction that made it necessary has committed, and every sweep claims its rows with a
conditional update, so each function here is safe to run twice or on two machines at once.
Callers import from here (`from apps.messaging import services`), not from the modules.
"""

from .batch import BATCH_MAX, BatchInvalid, StoredMessage, messages_send_batch, messages_send_batch_idempotent
from .broadcast import (
    BROADCAST_STALL,
    active_audience_size,
    broadcast_audience,
    broadcast_create,
    broadcast_expand_chunk,
    sweep_broadcasts,
)
from .chunks import ChunkReport, message_deliver, messages_deliver_chunk, messages_deliver_due
from .deliver import (
    catchup_chunk,
    messages_mark_sent,
    messages_write,
    recipient_deliver_backlog,
)
from .failures import dead_letters_delete, dead_letters_requeue, messages_fail, messages_release_unacked
from .idempotency import idempotency_keys_purge
from .receipts import Receipt, messages_acknowledge, messages_mark_read, receipts_apply
from .retention import messages_purge_expired
from .schedule import (
    message_cancel,
    scheduled_next_due_at,
    scheduled_promote_due,
    skip_frame,
    skips_for_catchup,
)
from .send import chat_message_store, message_send, message_send_idempotent, request_hash
from .sweeps import (
    pending_recipients_due_online,
    sweep_ack_timeouts,
    sweep_expired,
    sweep_pending,
    sweep_stale_connections,
)

__all__ = [
    "BATCH_MAX",
    "BROADCAST_STALL",
    "BatchInvalid",
    "ChunkReport",
    "Receipt",
    "StoredMessage",
    "active_audience_size",
    "broadcast_audience",
    "broadcast_create",
    "broadcast_expand_chunk",
    "catchup_chunk",
    "chat_message_store",
    "dead_letters_delete",
    "dead_letters_requeue",
    "idempotency_keys_purge",
    "message_cancel",
    "message_deliver",
    "message_send",
    "message_send_idempotent",
    "messages_acknowledge",
    "messages_deliver_chunk",
    "messages_deliver_due",
    "messages_fail",
    "messages_mark_read",
    "messages_mark_sent",
    "messages_purge_expired",
    "messages_release_unacked",
    "messages_send_batch",
    "messages_send_batch_idempotent",
    "messages_write",
    "pending_recipients_due_online",
    "receipts_apply",
    "recipient_deliver_backlog",
    "request_hash",
    "scheduled_next_due_at",
    "scheduled_promote_due",
    "skip_frame",
    "skips_for_catchup",
    "sweep_ack_timeouts",
    "sweep_broadcasts",
    "sweep_expired",
    "sweep_pending",
    "sweep_stale_connections",
]
