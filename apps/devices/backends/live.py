"""The live push backend: Android tokens through FCM, iOS tokens through APNS."""

from __future__ import annotations

from apps.common.breaker import PUSH_APNS, PUSH_FCM, breaker

from . import Notification, Result, Target, Verdict


class LiveBackend:
    def send(self, notification: Notification, targets: list[Target]) -> list[Result]:
        """Send to each token through its platform's provider; one result per token."""
        from . import apns, fcm

        android = [t for t in targets if t.platform == "android"]
        ios = [t for t in targets if t.platform == "ios"]
        results: list[Result] = []
        if android:
            results += _guarded(PUSH_FCM, fcm.send, notification, android)
        if ios:
            results += _guarded(PUSH_APNS, apns.send, notification, ios)
        return results


def _guarded(name: str, send, notification: Notification, targets: list[Target]) -> list[Result]:
    """Call a provider through its circuit breaker.

    While the breaker is open the provider is not called and each token is answered REJECTED:
    the token is left alone (an outage must not count against it) and the message simply stays
    `pending`, waiting for its recipient to connect or for the next push. A call counts as a
    failure when the provider answered no token (every result transient) or raised.
    """
    guard = breaker(name)
    if not guard.allow():
        return [Result(t.device_id, Verdict.REJECTED, error=f"{name} circuit open") for t in targets]
    try:
        results = send(notification, targets)
    except Exception:
        guard.record(ok=False)
        raise
    guard.record(ok=not results or any(r.verdict != Verdict.TRANSIENT for r in results))
    return results
