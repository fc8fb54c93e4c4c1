"""The live push backend: Android tokens through FCM, iOS tokens through APNS."""

from __future__ import annotations

from . import Notification, Result, Target


class LiveBackend:
    def send(self, notification: Notification, targets: list[Target]) -> list[Result]:
        """Send to each token through its platform's provider; one result per token."""
        from . import apns, fcm

        android = [t for t in targets if t.platform == "android"]
        ios = [t for t in targets if t.platform == "ios"]
        results: list[Result] = []
        if android:
            results += fcm.send(notification, android)
        if ios:
            results += apns.send(notification, ios)
        return results
