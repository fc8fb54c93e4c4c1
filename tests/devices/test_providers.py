"""What each provider answer does to the token and to the retry schedule (SPEC.md section 5):
invalid tokens deactivated at once, transient answers retried honouring Retry-After and given
up after three in a row, rejected notifications keep the token, credential errors alarm."""

from __future__ import annotations

import logging

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.utils import timezone

from apps.accounts.party import Party
from apps.devices import services as push
from apps.devices.backends import Verdict
from apps.devices.models import DeviceToken
from apps.devices.services import device_register
from apps.messaging.models import Channel, DeliveryAttempt, Outcome, Status
from tests.factories import MessageFactory

from .conftest import queued_tasks
from .fake_apns import Reply as ApnsReply
from .fake_fcm import Reply as FcmReply

ANDROID = "fcm-registration-token-2"
IOS = "b2" * 32
RETRY_TASK = "apps.devices.tasks.push_retry"


@pytest.fixture
def message(recipient, sender):
    return MessageFactory(sender=sender, recipient=recipient, status=Status.PENDING, next_attempt_at=None)


@pytest.fixture
def android(recipient):
    return device_register(mobile_user=recipient, token=ANDROID, platform="android")[0]


@pytest.fixture
def ios(recipient):
    return device_register(mobile_user=recipient, token=IOS, platform="ios")[0]


def attempts(message) -> list[tuple[str, str]]:
    return list(DeliveryAttempt.objects.filter(message=message).values_list("channel", "outcome"))


@pytest.mark.parametrize(
    "reply",
    [
        FcmReply("NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
        FcmReply("PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"),
        FcmReply(
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
        ),
    ],
    ids=["unregistered", "sender-id-mismatch", "invalid-token-argument"],
)
def test_fcm_invalid_token_is_deactivated_at_once_without_retry(providers, message, android, redis, reply):
    providers.fcm.answer(ANDROID, reply)

    report = push.push_send(message_id=message.pk)

    android.refresh_from_db()
    assert android.is_active is False
    assert reply.error_code in android.last_error or reply.status in android.last_error
    assert report.retry_device_ids == [] and queued_tasks(redis, RETRY_TASK) == []
    assert len(providers.fcm.to(ANDROID)) == 1
    assert attempts(message) == [(Channel.FCM, Outcome.ERROR)]
    message.refresh_from_db()
    assert message.status == Status.PENDING


@pytest.mark.parametrize(
    "reply", [ApnsReply(410, "Unregistered"), ApnsReply(400, "BadDeviceToken")], ids=["410", "bad-token"]
)
def test_apns_invalid_token_is_deactivated_at_once_without_retry(providers, message, ios, redis, reply):
    providers.apns.answer(IOS, reply)

    report = push.push_send(message_id=message.pk)

    ios.refresh_from_db()
    assert ios.is_active is False
    assert reply.reason in ios.last_error
    assert report.retry_device_ids == [] and queued_tasks(redis, RETRY_TASK) == []
    assert len(providers.apns.to(IOS)) == 1
    assert attempts(message) == [(Channel.APNS, Outcome.ERROR)]


def test_a_deactivated_token_gets_no_later_push(providers, message, android, ios):
    providers.fcm.answer(ANDROID, FcmReply("NOT_FOUND", "UNREGISTERED"))
    push.push_send(message_id=message.pk)

    push.push_send(message_id=message.pk)

    assert len(providers.fcm.to(ANDROID)) == 1
    assert len(providers.apns.to(IOS)) == 2


@pytest.mark.parametrize(
    ("fcm_reply", "apns_reply"),
    [
        (
            FcmReply("INVALID_ARGUMENT", "INVALID_ARGUMENT", "Message is too big"),
            ApnsReply(413, "PayloadTooLarge"),
        ),
    ],
)
def test_oversize_payload_keeps_the_token(providers, message, android, ios, redis, fcm_reply, apns_reply):
    providers.fcm.answer(ANDROID, fcm_reply)
    providers.apns.answer(IOS, apns_reply)

    report = push.push_send(message_id=message.pk)

    for device in (android, ios):
        device.refresh_from_db()
        assert (device.is_active, device.consecutive_failures) == (True, 0)
        assert device.last_error
    assert {r.verdict for r in report.results} == {Verdict.REJECTED}
    assert report.retry_device_ids == [] and queued_tasks(redis, RETRY_TASK) == []
    assert sorted(attempts(message)) == [(Channel.APNS, Outcome.ERROR), (Channel.FCM, Outcome.ERROR)]


def test_fcm_503_with_retry_after_is_retried_not_before_it(providers, message, android, redis):
    providers.fcm.answer(
        ANDROID, FcmReply("UNAVAILABLE", "", "The service is unavailable.", retry_after="30")
    )
    before = timezone.now()

    report = push.push_send(message_id=message.pk)

    # One request: firebase-admin's own urllib3 retries are off, the retry is ours.
    assert len(providers.fcm.to(ANDROID)) == 1
    assert report.retry_device_ids == [android.pk] and report.retry_in >= 30
    [retry] = queued_tasks(redis, RETRY_TASK)
    assert retry.args == [str(message.pk), [android.pk], 2]
    assert (retry.eta - before).total_seconds() >= 30
    android.refresh_from_db()
    assert (android.is_active, android.consecutive_failures) == (True, 1)

    push.push_send(message_id=message.pk, device_ids=[android.pk], attempt=2)  # what the retry task runs

    android.refresh_from_db()
    assert (android.is_active, android.consecutive_failures, android.last_error) == (True, 0, "")
    assert attempts(message) == [(Channel.FCM, Outcome.ERROR), (Channel.FCM, Outcome.SENT)]


def test_fcm_429_quota_exceeded_backs_off_longer_each_time(providers, message, android, settings):
    settings.MESSAGING_RETRY_BASE_SECONDS = 2
    quota = FcmReply("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded.")
    providers.fcm.answer(ANDROID, quota, quota)

    first = push.push_send(message_id=message.pk, attempt=1)
    second = push.push_send(message_id=message.pk, device_ids=[android.pk], attempt=2)

    assert (first.retry_in, second.retry_in) == (2, 4)
    android.refresh_from_db()
    assert (android.is_active, android.consecutive_failures) == (True, 2)


def test_fcm_429_honours_a_retry_after_longer_than_the_backoff(providers, message, android):
    providers.fcm.answer(
        ANDROID, FcmReply("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota", retry_after="120")
    )

    assert push.push_send(message_id=message.pk).retry_in == 120


@pytest.mark.parametrize("status", [429, 500, 503])
def test_three_transient_apns_failures_in_a_row_deactivate(providers, message, ios, redis, status):
    providers.apns.answer(IOS, *[ApnsReply(status, "ServiceUnavailable")] * 3)

    reports = [push.push_send(message_id=message.pk, device_ids=[ios.pk], attempt=n) for n in (1, 2, 3)]

    assert [r.retry_device_ids for r in reports] == [[ios.pk], [ios.pk], []]
    assert [r.retry_in for r in reports[:2]] == [1, 2]
    ios.refresh_from_db()
    assert (ios.is_active, ios.consecutive_failures) == (False, 3)
    assert len(queued_tasks(redis, RETRY_TASK)) == 2
    assert push.push_send(message_id=message.pk, device_ids=[ios.pk], attempt=4).results == []
    assert len(providers.apns.to(IOS)) == 3


def test_a_success_between_transient_failures_resets_the_count(providers, message, ios):
    providers.apns.answer(IOS, ApnsReply(503, "ServiceUnavailable"), ApnsReply(503, "ServiceUnavailable"))
    push.push_send(message_id=message.pk)
    push.push_send(message_id=message.pk)
    push.push_send(message_id=message.pk)  # 200
    providers.apns.answer(IOS, ApnsReply(503, "ServiceUnavailable"))

    push.push_send(message_id=message.pk)

    ios.refresh_from_db()
    assert (ios.is_active, ios.consecutive_failures) == (True, 1)


def test_a_retry_for_a_message_delivered_meanwhile_sends_nothing(providers, message, android):
    providers.fcm.answer(ANDROID, FcmReply("UNAVAILABLE", "", "unavailable"))
    push.push_send(message_id=message.pk)
    from apps.messaging import services

    services.messages_acknowledge(recipient=Party.mobile(message.recipient_id), message_ids=[message.pk])

    assert push.push_send(message_id=message.pk, device_ids=[android.pk], attempt=2).results == []
    assert len(providers.fcm.to(ANDROID)) == 1


def test_fcm_credential_error_is_an_alarm_and_leaves_tokens_alone(
    providers, message, android, redis, caplog, settings, service_account_file, tmp_path
):
    providers.fcm.refuse_oauth = True
    # Credentials "rotated" to a new file: a fresh client, with no access token cached yet.
    settings.FCM_CREDENTIALS_FILE = str(tmp_path / "rotated.json")
    (tmp_path / "rotated.json").write_bytes(service_account_file.read_bytes())

    with caplog.at_level(logging.ERROR, logger="apps.devices.services"):
        report = push.push_send(message_id=message.pk)

    assert [r.verdict for r in report.results] == [Verdict.CONFIGURATION]
    assert [r.message for r in caplog.records if r.name == "apps.devices.services"] == [
        "push.configuration_alarm"
    ]
    android.refresh_from_db()
    assert (android.is_active, android.consecutive_failures, android.last_error) == (True, 0, "")
    assert providers.fcm.received == []
    assert report.retry_device_ids == [] and queued_tasks(redis, RETRY_TASK) == []
    assert attempts(message) == [(Channel.FCM, Outcome.ERROR)]


def test_apns_credential_error_is_an_alarm_and_leaves_tokens_alone(
    providers, message, ios, redis, caplog, settings, tmp_path
):
    wrong_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "wrong.p8").write_bytes(wrong_key)
    settings.APNS_KEY_FILE = str(tmp_path / "wrong.p8")

    with caplog.at_level(logging.ERROR, logger="apps.devices.services"):
        report = push.push_send(message_id=message.pk)

    assert [r.verdict for r in report.results] == [Verdict.CONFIGURATION]
    assert "InvalidProviderToken" in report.results[0].error
    assert [r.message for r in caplog.records if r.name == "apps.devices.services"] == [
        "push.configuration_alarm"
    ]
    ios.refresh_from_db()
    assert (ios.is_active, ios.consecutive_failures, ios.last_error) == (True, 0, "")
    assert report.retry_device_ids == [] and queued_tasks(redis, RETRY_TASK) == []


def test_unreachable_apns_is_transient(providers, message, ios, settings):
    settings.APNS_ENDPOINT = "127.0.0.1:9"  # nothing listens on the discard port
    settings.PUSH_SEND_TIMEOUT_SECONDS = 3

    report = push.push_send(message_id=message.pk)

    assert [r.verdict for r in report.results] == [Verdict.TRANSIENT]
    ios.refresh_from_db()
    assert (ios.is_active, ios.consecutive_failures) == (True, 1)
    assert DeviceToken.objects.get(pk=ios.pk).is_active
