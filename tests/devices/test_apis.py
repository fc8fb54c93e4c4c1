"""Device and preference endpoints: registration, ownership, validation (SPEC.md section 3)."""

from __future__ import annotations

import pytest

from apps.devices.models import DeviceToken, PushPreferences
from apps.devices.services import device_register
from tests.conftest import client_for
from tests.factories import MobileUserFactory

DEVICES = "/api/v1/devices/"
PREFERENCES = "/api/v1/mobile/me/preferences/"


def test_registering_a_new_token_answers_201_with_the_device(mobile_client, mobile_user):
    response = mobile_client.post(DEVICES, {"token": "fcm-token-1", "platform": "android"}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "token", "platform", "is_active", "last_used_at", "created_at"}
    assert (body["token"], body["platform"], body["is_active"]) == ("fcm-token-1", "android", True)
    assert list(DeviceToken.objects.values_list("mobile_user", "token")) == [(mobile_user.pk, "fcm-token-1")]


def test_re_registering_the_same_token_is_idempotent_and_answers_200(mobile_client, mobile_user):
    first = mobile_client.post(DEVICES, {"token": "tok", "platform": "ios"}, format="json")
    again = mobile_client.post(DEVICES, {"token": "tok", "platform": "ios"}, format="json")

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert DeviceToken.objects.count() == 1


def test_re_registering_moves_the_token_to_the_caller_and_reactivates_it(
    mobile_client, mobile_user, stranger
):
    device, _ = device_register(mobile_user=stranger, token="shared-phone", platform="android")
    DeviceToken.objects.filter(pk=device.pk).update(is_active=False, consecutive_failures=2, last_error="x")

    response = mobile_client.post(DEVICES, {"token": "shared-phone", "platform": "android"}, format="json")

    assert response.status_code == 200
    device.refresh_from_db()
    assert (device.mobile_user_id, device.is_active, device.consecutive_failures, device.last_error) == (
        mobile_user.pk,
        True,
        0,
        "",
    )
    assert not DeviceToken.objects.filter(mobile_user=stranger).exists()


@pytest.mark.parametrize(
    "body",
    [
        {"token": "tok", "platform": "windows"},
        {"token": "", "platform": "android"},
        {"token": "   ", "platform": "ios"},
        {"token": "x" * 513, "platform": "android"},
        {"platform": "android"},
        {"token": "tok"},
    ],
    ids=["bad-platform", "empty-token", "blank-token", "token-too-long", "no-token", "no-platform"],
)
def test_bad_device_input_is_400_and_stores_nothing(mobile_client, body):
    response = mobile_client.post(DEVICES, body, format="json")

    assert response.status_code == 400
    assert response.json()["detail"]
    assert not DeviceToken.objects.exists()


def test_list_shows_only_the_callers_devices(mobile_client, mobile_user, stranger):
    mine, _ = device_register(mobile_user=mobile_user, token="mine", platform="ios")
    device_register(mobile_user=stranger, token="theirs", platform="android")

    response = mobile_client.get(DEVICES)

    assert response.status_code == 200
    assert response.json()["count"] == 1
    assert [d["id"] for d in response.json()["results"]] == [mine.pk]


def test_patch_switches_a_device_off_and_on(mobile_client, mobile_user):
    device, _ = device_register(mobile_user=mobile_user, token="tok", platform="ios")
    DeviceToken.objects.filter(pk=device.pk).update(consecutive_failures=2)

    off = mobile_client.patch(f"{DEVICES}{device.pk}/", {"is_active": False}, format="json")
    assert off.status_code == 200 and off.json()["is_active"] is False
    on = mobile_client.patch(f"{DEVICES}{device.pk}/", {"is_active": True}, format="json")

    assert on.status_code == 200 and on.json()["is_active"] is True
    device.refresh_from_db()
    assert device.consecutive_failures == 0


def test_delete_removes_the_device(mobile_client, mobile_user):
    device, _ = device_register(mobile_user=mobile_user, token="tok", platform="ios")

    assert mobile_client.delete(f"{DEVICES}{device.pk}/").status_code == 204
    assert not DeviceToken.objects.exists()


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_another_users_device_is_404_and_untouched(mobile_client, stranger, method):
    device, _ = device_register(mobile_user=stranger, token="theirs", platform="android")

    response = getattr(mobile_client, method)(f"{DEVICES}{device.pk}/", {"is_active": False}, format="json")

    assert response.status_code == 404
    device.refresh_from_db()
    assert (device.mobile_user_id, device.is_active) == (stranger.pk, True)


def test_senders_get_403_on_devices_and_preferences(sender_client):
    assert sender_client.get(DEVICES).status_code == 403
    assert sender_client.post(DEVICES, {"token": "t", "platform": "ios"}, format="json").status_code == 403
    assert sender_client.get(PREFERENCES).status_code == 403
    assert sender_client.patch(PREFERENCES, {"push_enabled": False}, format="json").status_code == 403
    assert not DeviceToken.objects.exists()
    assert not PushPreferences.objects.exists()


def test_anonymous_gets_401(anonymous_client):
    assert anonymous_client.get(DEVICES).status_code == 401
    assert anonymous_client.get(PREFERENCES).status_code == 401


def test_preferences_default_to_push_on_without_quiet_hours(mobile_client):
    response = mobile_client.get(PREFERENCES)

    assert response.status_code == 200
    assert response.json() == {
        "push_enabled": True,
        "quiet_hours_start": None,
        "quiet_hours_end": None,
        "timezone": "UTC",
    }
    assert not PushPreferences.objects.exists()  # reading stores nothing


def test_patch_preferences_saves_quiet_hours_in_a_time_zone(mobile_client, mobile_user):
    body = {"quiet_hours_start": "22:00", "quiet_hours_end": "07:00", "timezone": "Europe/Paris"}

    response = mobile_client.patch(PREFERENCES, body, format="json")
    later = mobile_client.patch(PREFERENCES, {"push_enabled": False}, format="json")

    assert response.status_code == 200
    assert later.json() == {
        "push_enabled": False,
        "quiet_hours_start": "22:00:00",
        "quiet_hours_end": "07:00:00",
        "timezone": "Europe/Paris",
    }
    assert PushPreferences.objects.get(mobile_user=mobile_user).timezone == "Europe/Paris"


@pytest.mark.parametrize(
    "body",
    [
        {"timezone": "Mars/Olympus"},
        {"timezone": "europe/paris"},
        {"timezone": ""},
        {"quiet_hours_start": "22:00"},
        {"quiet_hours_start": "25:00", "quiet_hours_end": "07:00"},
        {"push_enabled": "maybe"},
    ],
    ids=["unknown-zone", "wrong-case-zone", "empty-zone", "start-without-end", "bad-time", "bad-bool"],
)
def test_bad_preferences_are_400_and_change_nothing(mobile_client, mobile_user, body):
    response = mobile_client.patch(PREFERENCES, body, format="json")

    assert response.status_code == 400
    assert response.json()["detail"]
    assert not PushPreferences.objects.filter(mobile_user=mobile_user).exists()


def test_each_mobile_user_sees_only_its_own_preferences(mobile_client, db):
    other = MobileUserFactory()
    client_for(other).patch(PREFERENCES, {"push_enabled": False}, format="json")

    assert mobile_client.get(PREFERENCES).json()["push_enabled"] is True
