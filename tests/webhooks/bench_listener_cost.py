"""What the webhook listener costs a status change (not collected; run it by name with -s):

    pytest -s tests/webhooks/bench_listener_cost.py

Times 1,000 single-message transitions (queued -> sent, each its own transaction, like an ack)
without the listener, with it and no endpoint, with one subscribed endpoint (one INSERT, and the
after-commit wake-up: a Redis SET NX), and with an endpoint of another sender only.
"""

from __future__ import annotations

import statistics
import time

import pytest

from apps.messaging import hooks, lifecycle
from apps.messaging.models import Message, Status
from apps.webhooks import recording
from apps.webhooks.models import WebhookEvent

from ..factories import MessageFactory, SenderFactory
from .conftest import endpoint_for

N = 1000


def _time(messages) -> float:
    started = time.perf_counter()
    for message in messages:
        lifecycle.transition(Message.objects.filter(pk=message.pk), to=Status.SENT)
    return (time.perf_counter() - started) / len(messages) * 1e6


@pytest.mark.django_db(transaction=True)
def test_listener_cost(sender, mobile_user, redis):
    def batch():
        return [MessageFactory(sender=sender, recipient=mobile_user) for _ in range(N)]

    results: dict[str, list[float]] = {}
    for _ in range(3):
        hooks._status_listeners.remove(recording.status_changed)
        try:
            results.setdefault("no listener", []).append(_time(batch()))
        finally:
            hooks.on_status_change(recording.status_changed)
        results.setdefault("listener, no endpoint", []).append(_time(batch()))
        other = endpoint_for(SenderFactory(), "http://127.0.0.1:9/other")
        results.setdefault("listener, another sender's endpoint", []).append(_time(batch()))
        other.delete()
        mine = endpoint_for(sender, "http://127.0.0.1:9/mine", events=["message.sent"])
        results.setdefault("listener, 1 subscribed endpoint", []).append(_time(batch()))
        mine.delete()
    assert WebhookEvent.objects.count() == 0  # deleted with their endpoints
    # The listener alone, inside one transaction (no commit noise): what it adds to a change.
    message = MessageFactory(sender=sender, recipient=mobile_user)
    row = lifecycle._Row(
        message.pk, "queued", "one_way", None, sender.pk, None, mobile_user.pk, "", message.created_at
    )
    change = hooks.StatusChange([row], status="sent", at=message.created_at, reason="")
    from django.db import transaction

    for label, subscribed in (
        ("listener call alone, no endpoint", False),
        ("listener call alone, 1 endpoint", True),
    ):
        endpoint = (
            endpoint_for(sender, "http://127.0.0.1:9/x", events=["message.sent"]) if subscribed else None
        )
        for _ in range(3):
            with transaction.atomic():
                started = time.perf_counter()
                for _ in range(N):
                    recording.status_changed(change)
                results.setdefault(label, []).append((time.perf_counter() - started) / N * 1e6)
                transaction.set_rollback(True)
        if endpoint is not None:
            endpoint.delete()
    for name, values in results.items():
        runs = [round(v) for v in values]
        print(f"{name:40s} {statistics.median(values):8.0f} us per transition (runs: {runs})")
