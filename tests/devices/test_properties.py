"""Property: every active token of an offline user with push enabled receives exactly one push
per coalescing window, and no inactive token ever receives one.

Random devices (platform, active or not, some that the provider reports unregistered) and
random bursts over a few windows run through the real hook (message_deliver), the window task's
service and the real clients against the local FCM and APNS servers.
"""

from __future__ import annotations

import uuid
from collections import Counter

from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.devices import services as push
from apps.devices.models import DeviceToken
from apps.devices.services import device_register, preferences_update
from apps.messaging import services
from tests.factories import MobileUserFactory

from .conftest import queued_tasks
from .fake_apns import Reply as ApnsReply
from .fake_fcm import Reply as FcmReply

device_specs = st.lists(
    st.tuples(st.sampled_from(["android", "ios"]), st.booleans(), st.booleans()),  # platform, active, dies
    min_size=1,
    max_size=4,
)
WINDOW_TASK = "apps.devices.tasks.push_window_end"
bursts = st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=3)


def active_left(devices) -> bool:
    return DeviceToken.objects.filter(pk__in=[d.pk for d, _, _ in devices], is_active=True).exists()


@hypothesis_settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=device_specs, windows=bursts, push_enabled=st.booleans())
def test_each_active_token_gets_one_push_per_window_and_inactive_ones_none(
    providers, sender, redis, django_capture_on_commit_callbacks, specs, windows, push_enabled
):
    providers.fcm.reset()
    providers.apns.reset()
    recipient = MobileUserFactory()
    preferences_update(mobile_user=recipient, push_enabled=push_enabled)
    devices = []
    for platform, active, dies in specs:
        token = uuid.uuid4().hex * 2 if platform == "ios" else f"fcm-{uuid.uuid4()}"
        device, _ = device_register(mobile_user=recipient, token=token, platform=platform)
        if not active:
            DeviceToken.objects.filter(pk=device.pk).update(is_active=False)
        elif dies:  # the provider has forgotten it: its first push deactivates it
            if platform == "ios":
                providers.apns.answer(token, ApnsReply(410, "Unregistered"))
            else:
                providers.fcm.answer(token, FcmReply("NOT_FOUND", "UNREGISTERED"))
        devices.append((device, active, dies))

    for number, burst in enumerate(windows, start=1):
        for _ in range(burst):
            with django_capture_on_commit_callbacks(execute=True):
                message = services.message_send(
                    sender=sender, recipient_phone_number=recipient.phone_number, content="hi"
                )
            with django_capture_on_commit_callbacks(execute=True):
                services.message_deliver(message_id=message.pk)
        opened = [t for t in queued_tasks(redis, WINDOW_TASK) if t.args == [recipient.pk]]
        assert len(opened) == number  # one window per burst, however long the burst
        expected = "held" if not push_enabled else "sent" if active_left(devices) else "no_devices"
        assert push.push_window_close(recipient_id=recipient.pk) == expected
        redis.delete(f"push:window:{recipient.pk}")  # the window expires

    received = Counter(r.token for r in providers.fcm.received + providers.apns.received)
    if not push_enabled:
        assert received == Counter()
        return
    for device, active, dies in devices:
        if not active:
            assert received[device.token] == 0
        elif dies:
            assert received[device.token] == 1  # the push that found it dead, then never again
        else:
            assert received[device.token] == len(windows)
    assert set(received) <= {d.token for d, _, _ in devices}
