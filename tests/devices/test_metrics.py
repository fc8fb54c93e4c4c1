"""Every push is counted by platform and the provider's verdict."""

from __future__ import annotations

from apps.common import metrics
from apps.devices import services as push

from .conftest import queued_tasks
from .test_push import WINDOW_TASK, devices, send_offline  # noqa: F401 - `devices` is a fixture


def pushes(platform: str, outcome: str) -> float:
    return metrics.PUSH.labels(platform=platform, outcome=outcome)._value.get()


def test_each_push_counts_once_per_platform(
    providers,
    sender,
    recipient,
    devices,  # noqa: F811 - the imported fixture
    redis,
    django_capture_on_commit_callbacks,
):
    before = (pushes("android", "sent"), pushes("ios", "sent"))
    send_offline(sender, recipient, django_capture_on_commit_callbacks)
    assert queued_tasks(redis, WINDOW_TASK)

    assert push.push_window_close(recipient_id=recipient.pk) == "sent"

    assert (pushes("android", "sent"), pushes("ios", "sent")) == (before[0] + 1, before[1] + 1)
