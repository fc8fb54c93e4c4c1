"""The `message` frame payload (SPEC.md section 3, mobile WebSocket)."""

from __future__ import annotations

from apps.media.serializers import attachment_payload
from apps.messaging.models import Message


def message_payload(message: Message) -> dict:
    """Return the M object of a `message` frame.

    `message.sender` must be loaded and `message.attachments` prefetched (the selectors do);
    each attachment gets freshly signed URLs.
    """
    sender = message.sender
    return {
        "id": str(message.id),
        "seq": message.seq,
        "kind": message.kind,
        "conversation_id": None,
        "sender": {"type": "business", "id": sender.pk, "name": sender.name},
        "subject": message.subject,
        "content": message.content,
        "content_type": message.content_type,
        "priority": message.priority,
        "created_at": message.created_at.isoformat().replace("+00:00", "Z"),
        "attachments": [attachment_payload(media) for media in message.attachments.all()],
    }


def message_frame(payload: dict) -> dict:
    """Return the `message` frame for an M object made by `message_payload`."""
    return {"type": "message", "message": payload}
