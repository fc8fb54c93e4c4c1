"""The `message` frame payload (SPEC.md section 3, mobile WebSocket)."""

from __future__ import annotations

from apps.accounts.models import PartyKind
from apps.media.serializers import attachment_payload
from apps.messaging.models import Message


def message_payload(message: Message) -> dict:
    """Return the M object of a `message` frame.

    The author (`sender` or `sender_mobile`) must be loaded and `message.attachments`
    prefetched (`selectors.with_parties` does); each attachment gets freshly signed URLs.
    """
    return {
        "id": str(message.id),
        "seq": message.seq,
        "kind": message.kind,
        "conversation_id": str(message.conversation_id) if message.conversation_id else None,
        "sender": author_payload(message),
        "subject": message.subject,
        "content": message.content,
        "content_type": message.content_type,
        "priority": message.priority,
        "created_at": message.created_at.isoformat().replace("+00:00", "Z"),
        "attachments": [attachment_payload(media) for media in message.attachments.all()],
    }


def author_payload(message: Message) -> dict:
    """Return the `sender` object of a message: who wrote it."""
    if message.sender_id is not None:
        return {"type": PartyKind.BUSINESS, "id": message.sender_id, "name": message.sender.name}
    mobile = message.sender_mobile
    return {"type": PartyKind.MOBILE, "id": mobile.pk, "name": mobile.display}


def status_frame(*, message_id: str, status: str, at: str) -> dict:
    """Return the `status` frame telling a chat message's author how far it got."""
    return {"type": "status", "message_id": message_id, "status": status, "at": at}


def message_frame(payload: dict) -> dict:
    """Return the `message` frame for an M object made by `message_payload`."""
    return {"type": "message", "message": payload}
