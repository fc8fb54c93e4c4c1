"""The part the fake FCM and APNS servers share: what they received, and scripted replies."""

from __future__ import annotations

import threading
from typing import Any, Generic, TypeVar

ReplyT = TypeVar("ReplyT")


class ScriptedReplies(Generic[ReplyT]):
    """Record what a fake provider receives; answer each device token as a test scripted it."""

    def __init__(self) -> None:
        self.received: list[Any] = []
        self._script: dict[str, list[ReplyT]] = {}
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self._script.clear()

    def answer(self, token: str, *replies: ReplyT) -> None:
        """Answer the next sends to `token` with `replies`, in order, then 200."""
        with self._lock:
            self._script.setdefault(token, []).extend(replies)

    def to(self, token: str) -> list[Any]:
        return [r for r in self.received if r.token == token]

    def _next_reply(self, token: str) -> ReplyT | None:
        with self._lock:
            queue = self._script.get(token)
            return queue.pop(0) if queue else None
