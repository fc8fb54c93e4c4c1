"""Management commands create_sender and create_mobile_user: the token is the last line."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, MobileUser, User
from apps.accounts.selectors import principal_for_token
from tests.factories import MobileUserFactory, SenderFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def perms(user: User) -> set[str]:
    return set(user.user_permissions.values_list("codename", flat=True))


def test_create_sender_prints_a_working_token_last():
    lines = run("create_sender", "acme")

    user = User.objects.get(username="acme")
    key = lines[-1]
    assert principal_for_token(key=key) == user
    assert user.tier == "basic"
    assert perms(user) == {"send_message", "chat"}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/messages/").status_code == 200
    assert client.get("/api/v1/dead-letters/").status_code == 403


@pytest.mark.parametrize("tier", ["basic", "premium", "enterprise"])
def test_create_sender_sets_the_tier(tier):
    run("create_sender", f"acme-{tier}", "--tier", tier)

    assert User.objects.get(username=f"acme-{tier}").tier == tier


def test_create_sender_flags_grant_broadcast_and_dead_letter_permissions():
    key = run("create_sender", "ops", "--operator", "--broadcast")[-1]

    user = User.objects.get(username="ops")
    assert perms(user) == {"send_message", "chat", "send_broadcast", "manage_dead_letters"}
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/v1/dead-letters/").status_code == 200


def test_create_sender_with_a_bad_tier_fails_and_creates_nothing():
    with pytest.raises(CommandError, match="tier"):
        run("create_sender", "acme", "--tier", "gold")

    assert not User.objects.exists()
    assert not ApiToken.objects.exists()


def test_create_sender_with_a_taken_username_fails_and_keeps_the_original():
    existing = SenderFactory(username="acme", tier="premium")

    with pytest.raises(CommandError):
        run("create_sender", "acme")

    assert list(User.objects.values_list("pk", "tier")) == [(existing.pk, "premium")]
    assert not ApiToken.objects.exists()


def test_create_mobile_user_normalises_the_phone_and_prints_a_working_token_last():
    lines = run("create_mobile_user", "+1 415-555-0177", "--name", "Ada")

    mobile = MobileUser.objects.get()
    assert (mobile.phone_number, mobile.name, mobile.last_seq) == ("+14155550177", "Ada", 0)
    assert principal_for_token(key=lines[-1]) == mobile
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {lines[-1]}")
    assert client.post("/api/v1/realtime/tickets/").status_code == 201


@pytest.mark.parametrize("phone", ["4155550177", "+1415", "not a phone"])
def test_create_mobile_user_with_an_invalid_phone_fails_and_creates_nothing(phone):
    with pytest.raises(CommandError):
        run("create_mobile_user", phone)

    assert not MobileUser.objects.exists()
    assert not ApiToken.objects.exists()


def test_create_mobile_user_with_a_registered_phone_fails_and_keeps_the_original():
    existing = MobileUserFactory(phone_number="+14155550177", name="First")

    with pytest.raises(CommandError, match="already registered"):
        run("create_mobile_user", "+1 (415) 555-0177", "--name", "Second")

    assert list(MobileUser.objects.values_list("pk", "name")) == [(existing.pk, "First")]
    assert not ApiToken.objects.exists()
