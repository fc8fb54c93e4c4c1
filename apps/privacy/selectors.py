"""The export of everything stored about a mobile user, as JSON text produced piece by piece.

Messages can be many: they are read a page at a time (keyset pagination on an index) and
written out as they are read, so memory stays bounded by one page whatever the history.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet

from apps.accounts.models import ApiToken, MobileUser
from apps.conversations.models import Conversation
from apps.devices.models import DeviceToken, PushPreferences
from apps.media.models import Media
from apps.media.serializers import attachment_payload
from apps.messaging.frames import author_payload
from apps.messaging.models import Message

EXPORT_PAGE = 500
EXPORT_FORMAT = 1


def _dumps(value: object) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)


def _profile(user: MobileUser) -> dict:
    return {
        "id": user.pk,
        "phone_number": user.phone_number,
        "name": user.name,
        "is_active": user.is_active,
        "created_at": user.created_at,
        "messages_received": user.last_seq,
    }


def _preferences(user: MobileUser) -> dict:
    stored = PushPreferences.objects.filter(mobile_user=user).first()
    prefs = stored or PushPreferences(mobile_user=user)  # the defaults, when never changed
    return {
        "push_enabled": prefs.push_enabled,
        "quiet_hours_start": prefs.quiet_hours_start,
        "quiet_hours_end": prefs.quiet_hours_end,
        "timezone": prefs.timezone,
        "stored": stored is not None,
    }


def _devices(user: MobileUser) -> list[dict]:
    return list(
        DeviceToken.objects.filter(mobile_user=user)
        .order_by("pk")
        .values("id", "token", "platform", "is_active", "last_used_at", "last_error", "created_at")
    )


def _tokens(user: MobileUser) -> list[dict]:
    # Never the digest: the prefix is what the user can recognise a token by.
    return list(
        ApiToken.objects.filter(mobile_user=user)
        .order_by("pk")
        .values("prefix", "created_at", "last_used_at")
    )


def _uploads(user: MobileUser) -> list[dict]:
    return [
        {**attachment_payload(media), "created_at": media.created_at, "message_id": media.message_id}
        for media in Media.objects.filter(mobile_user=user).order_by("created_at", "pk")
    ]


def _conversations(user: MobileUser) -> list[dict]:
    return [
        {
            "id": c.pk,
            "status": c.status,
            "business": {"id": c.business_id, "name": c.business.name},
            "created_at": c.created_at,
            "last_message_at": c.last_message_at,
            "closed_at": c.closed_at,
            "unread_count": c.unread_mobile,
        }
        for c in Conversation.objects.filter(mobile=user)
        .select_related("business")
        .order_by("created_at", "pk")
    ]


def _message(message: Message) -> dict:
    if message.recipient_id is not None:
        recipient = {"type": "mobile", "id": message.recipient_id}
    else:
        recipient = {
            "type": "business",
            "id": message.recipient_business_id,
            "name": message.recipient_business.name,
        }
    return {
        "id": message.pk,
        "kind": message.kind,
        "conversation_id": message.conversation_id,
        "seq": message.seq,
        "sender": author_payload(message),
        "recipient": recipient,
        "subject": message.subject,
        "content": message.content,
        "content_type": message.content_type,
        "priority": message.priority,
        "status": message.status,
        "retry_count": message.retry_count,
        "failure_reason": message.failure_reason,
        "ttl_seconds": message.ttl_seconds,
        "expires_at": message.expires_at,
        "created_at": message.created_at,
        "sent_at": message.sent_at,
        "delivered_at": message.delivered_at,
        "read_at": message.read_at,
        "failed_at": message.failed_at,
        "attachments": [attachment_payload(media) for media in message.attachments.all()],
        "attempts": [
            {"at": a.at, "channel": a.channel, "outcome": a.outcome, "error": a.error}
            for a in message.attempts.all()
        ],
    }


def _pages(messages: QuerySet[Message], key: str) -> Iterator[list[Message]]:
    """Yield `messages` a page at a time, ordered by `key` (a unique, indexed column)."""
    after = None
    while True:
        page = messages.order_by(key)
        if after is not None:
            page = page.filter(**{f"{key}__gt": after})
        rows = list(
            page.select_related("sender", "sender_mobile", "recipient_business").prefetch_related(
                "attempts", "attachments"
            )[:EXPORT_PAGE]
        )
        if not rows:
            return
        yield rows
        if len(rows) < EXPORT_PAGE:
            return
        after = getattr(rows[-1], key)


def _array(messages: QuerySet[Message], key: str) -> Iterator[str]:
    yield "["
    first = True
    for page in _pages(messages, key):
        yield ("" if first else ",") + ",".join(_dumps(_message(m)) for m in page)
        first = False
    yield "]"


def mobile_user_export(*, mobile_user: MobileUser) -> Iterator[str]:
    """Yield the JSON document of everything stored about `mobile_user`, in pieces.

    Received messages are read in their recipient's seq order (the unique (recipient, seq)
    index), sent ones by id (the author index narrows them): each page is one query.
    """
    head = {
        "format": EXPORT_FORMAT,
        "profile": _profile(mobile_user),
        "preferences": _preferences(mobile_user),
        "devices": _devices(mobile_user),
        "api_tokens": _tokens(mobile_user),
        "uploads": _uploads(mobile_user),
        "conversations": _conversations(mobile_user),
    }
    yield _dumps(head)[:-1] + ', "messages_received": '
    yield from _array(Message.objects.filter(recipient=mobile_user), "seq")
    yield ', "messages_sent": '
    yield from _array(Message.objects.filter(sender_mobile=mobile_user), "id")
    yield "}"
