"""Events for connected users that are not messages: status receipts and typing.

Both are best effort: a lost `status` frame is recovered by reading the message
(`GET /api/v1/messages/{id}/` or the conversation), a lost `typing` frame does not matter.
A channel-layer failure is logged, never raised into the transaction that caused the event.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from apps.accounts.party import Party
from apps.common import bridge

from .frames import status_frame

logger = logging.getLogger(__name__)


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def statuses_changed(changes: list[tuple[tuple[str, int], str]], *, status: str, at: datetime) -> None:
    """Tell each author, ((kind, id), message id), that its messages reached `status`."""
    frames_for: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for author, message_id in changes:
        frames_for[author].append(status_frame(message_id=message_id, status=status, at=_iso(at)))
    for (kind, user_id), frames in frames_for.items():
        try:
            bridge.group_send(Party(kind, user_id).group, {"type": "deliver.frames", "frames": frames})
        except Exception as exc:  # noqa: BLE001 - best effort, see the module docstring
            logger.warning(
                "realtime.status_event_failed", extra={"user": f"{kind}.{user_id}", "error": repr(exc)}
            )
