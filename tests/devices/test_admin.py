"""Admin: devices listed with filters, deactivate/reactivate actions, a test push."""

from __future__ import annotations

from django.urls import reverse

from apps.devices.models import DeviceToken
from apps.devices.services import device_register
from apps.messaging.models import DeliveryAttempt

from .fake_apns import Reply as ApnsReply

CHANGELIST = reverse("admin:devices_devicetoken_changelist")


def test_device_changelist_filters_by_platform_and_activity(admin_client, mobile_user):
    android, _ = device_register(mobile_user=mobile_user, token="android-tok", platform="android")
    device_register(mobile_user=mobile_user, token="ios-tok-" + "c" * 56, platform="ios")
    DeviceToken.objects.filter(pk=android.pk).update(is_active=False)

    everything = admin_client.get(CHANGELIST)
    inactive_android = admin_client.get(CHANGELIST, {"platform__exact": "android", "is_active__exact": "0"})
    by_phone = admin_client.get(CHANGELIST, {"q": mobile_user.phone_number})

    assert everything.status_code == 200
    assert everything.context["cl"].result_count == 2
    assert [d.pk for d in inactive_android.context["cl"].result_list] == [android.pk]
    assert by_phone.context["cl"].result_count == 2


def _act(admin_client, action: str, devices: list[DeviceToken]):
    return admin_client.post(
        CHANGELIST, {"action": action, "_selected_action": [d.pk for d in devices]}, follow=True
    )


def test_deactivate_and_reactivate_actions(admin_client, mobile_user):
    device, _ = device_register(mobile_user=mobile_user, token="tok", platform="android")
    DeviceToken.objects.filter(pk=device.pk).update(consecutive_failures=2, last_error="UNAVAILABLE")

    _act(admin_client, "deactivate", [device])
    device.refresh_from_db()
    assert device.is_active is False

    _act(admin_client, "reactivate", [device])
    device.refresh_from_db()
    assert (device.is_active, device.consecutive_failures, device.last_error) == (True, 0, "")


def test_send_test_push_goes_to_the_provider_and_records_no_message_attempt(
    admin_client, providers, mobile_user
):
    android, _ = device_register(mobile_user=mobile_user, token="android-test-tok", platform="android")

    response = _act(admin_client, "send_test_push", [android])

    [received] = providers.fcm.to("android-test-tok")
    assert received.message["notification"]["title"] == "Test push"
    assert "accepted by the provider" in response.content.decode()
    android.refresh_from_db()
    assert android.last_used_at is not None
    assert not DeliveryAttempt.objects.exists()


def test_send_test_push_to_a_dead_token_deactivates_it_and_says_so(admin_client, providers, mobile_user):
    token = "d" * 64
    ios, _ = device_register(mobile_user=mobile_user, token=token, platform="ios")
    providers.apns.answer(token, ApnsReply(410, "Unregistered"))

    response = _act(admin_client, "send_test_push", [ios])

    assert "invalid_token" in response.content.decode()
    ios.refresh_from_db()
    assert ios.is_active is False
