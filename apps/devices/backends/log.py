"""The default push backend: logs each push it would send, and reports it accepted."""

from __future__ import annotations

import logging

from . import Notification, Result, Target, Verdict

logger = logging.getLogger(__name__)


class LogBackend:
    def send(self, notification: Notification, targets: list[Target]) -> list[Result]:
        """Log one line per token and report every one accepted."""
        for target in targets:
            logger.info(
                "push.log",
                extra={
                    "device_id": target.device_id,
                    "platform": target.platform,
                    "title": notification.title,
                    "body": notification.body,
                    "data": notification.data,
                },
            )
        return [Result(t.device_id, Verdict.SENT) for t in targets]
