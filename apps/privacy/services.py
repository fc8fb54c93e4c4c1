"""Erasure of a mobile user: what identifies it or it wrote goes, the bookkeeping stays.

The user row and its messages' rows stay (senders' histories, seqs and counters refer to
them) but lose what identifies or was said: the phone number (replaced by a unique
placeholder, so the unique constraint holds), name, tokens, devices, preferences, the content,
subject and attachments of every message to or from the user, and the dead letters' copies
of them. Undelivered messages are failed through the lifecycle, so their senders hear of it.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Q

from apps.accounts.models import MobileUser, User
from apps.accounts.party import Party
from apps.accounts.services import tokens_revoke
from apps.audit.services import audit_record
from apps.common import bridge
from apps.conversations.models import OPEN, Conversation
from apps.conversations.services import conversation_close
from apps.devices.models import DeviceToken, PushHold, PushPreferences
from apps.media.models import Media
from apps.media.services import media_delete_many
from apps.messaging import lifecycle
from apps.messaging.models import DeadLetter, Message, Status

logger = logging.getLogger(__name__)

ERASED_REASON_RECIPIENT = "recipient erased"
ERASED_REASON_AUTHOR = "sender erased"
# The close code an erased user's sockets get: its credentials are no longer valid.
CLOSE_ERASED = 4401


ERASED_PREFIX = "erased-"


def erased_phone_placeholder(mobile_user_id: int) -> str:
    """Return the unique value that replaces an erased user's phone number (≤16 chars).

    Never a valid E.164 number (those start with "+"), so no lookup by phone can find it.
    """
    return f"{ERASED_PREFIX}{mobile_user_id}"


def mobile_user_erase(*, mobile_user: MobileUser, actor: User | MobileUser | None) -> dict[str, int]:
    """Erase `mobile_user` (idempotent); return what was removed, by kind.

    Its tokens stop working at once in every process (accounts.tokens_revoke) and its open
    sockets are told to close after commit.
    """
    with transaction.atomic():
        user = MobileUser.objects.select_for_update().get(pk=mobile_user.pk)
        # Inactive first: a send racing with this finds no active recipient and stores nothing.
        MobileUser.objects.filter(pk=user.pk).update(
            is_active=False, phone_number=erased_phone_placeholder(user.pk), name=""
        )
        counts = {"tokens": tokens_revoke(owner=user)}
        counts["devices"] = DeviceToken.objects.filter(mobile_user=user).delete()[0]
        PushPreferences.objects.filter(mobile_user=user).delete()
        PushHold.objects.filter(mobile_user=user).delete()
        failed = lifecycle.transition(
            Message.objects.filter(recipient=user), to=Status.FAILED, reason=ERASED_REASON_RECIPIENT
        )
        failed += lifecycle.transition(
            Message.objects.filter(sender_mobile=user), to=Status.FAILED, reason=ERASED_REASON_AUTHOR
        )
        counts["failed"] = len(failed)
        theirs = Message.objects.filter(Q(recipient=user) | Q(sender_mobile=user))
        counts["media"] = media_delete_many(
            media=Media.objects.filter(Q(message__in=theirs.values("pk")) | Q(mobile_user=user))
        )
        counts["messages"] = theirs.exclude(content="", subject="").update(content="", subject="")
        DeadLetter.objects.filter(message__in=theirs.values("pk")).update(payload={"erased": True})
        for conversation_id in Conversation.objects.filter(mobile=user, status__in=OPEN).values_list(
            "pk", flat=True
        ):
            conversation_close(conversation_id=conversation_id, participant=user)
        audit_record(
            action="mobile_user.erase",
            object_type="accounts.mobileuser",
            object_id=user.pk,
            actor=actor,
            details=counts,
        )
        transaction.on_commit(lambda: _close_sockets(user.pk))
    logger.info("mobile_user.erased", extra={"mobile_user_id": user.pk, **counts})
    return counts


def _close_sockets(mobile_user_id: int) -> None:
    """Tell every open socket of the user, in any web process, to close."""
    try:
        bridge.group_send(
            Party.mobile(mobile_user_id).group,
            {"type": "session.close", "code": CLOSE_ERASED},
        )
    except Exception as exc:  # noqa: BLE001 - the tokens are gone; nothing new reaches the user
        logger.warning(
            "mobile_user.erase_close_failed", extra={"mobile_user_id": mobile_user_id, "error": repr(exc)}
        )
