"""Token authentication and WebSocket tickets over HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, MobileUser, User
from apps.accounts.selectors import principal_for_ticket, principal_for_token
from apps.accounts.services import TICKET_PREFIX, token_create
from tests.conftest import client_for
from tests.factories import MobileUserFactory, SenderFactory

TICKETS = "/api/v1/realtime/tickets/"
pytestmark = pytest.mark.django_db


# --- tokens -----------------------------------------------------------------------------------


def test_tokens_are_stored_hashed_never_in_plaintext(sender):
    key = token_create(owner=sender)

    token = ApiToken.objects.get(user=sender)
    stored = [str(v) for v in ApiToken.objects.values_list(*[f.attname for f in ApiToken._meta.fields]).get()]
    assert all(key not in value for value in stored)
    assert token.digest == ApiToken.digest_of(key) != key
    assert token.prefix == key[:8]


def test_one_token_scheme_authenticates_senders_and_mobile_users(sender, mobile_user):
    assert principal_for_token(key=token_create(owner=sender)) == sender
    assert principal_for_token(key=token_create(owner=mobile_user)) == mobile_user


def test_each_token_belongs_to_exactly_one_principal(sender, mobile_user):
    token_create(owner=sender)
    token_create(owner=mobile_user)

    owners = list(ApiToken.objects.values_list("user_id", "mobile_user_id"))
    assert sorted(owners, key=str) == sorted([(sender.pk, None), (None, mobile_user.pk)], key=str)


@pytest.mark.parametrize("kind", ["sender", "mobile"])
def test_an_inactive_principals_token_is_401(kind):
    principal = SenderFactory() if kind == "sender" else MobileUserFactory()
    client = client_for(principal)
    type(principal).objects.filter(pk=principal.pk).update(is_active=False)

    response = client.post(TICKETS)

    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."


def test_token_use_is_recorded_on_the_token(sender):
    client = client_for(sender)
    assert ApiToken.objects.get(user=sender).last_used_at is None

    client.get("/api/v1/messages/")

    assert ApiToken.objects.get(user=sender).last_used_at is not None


@pytest.mark.parametrize(
    "header",
    ["Token", "Token a b", "token wrong-key", "Token " + "x" * 200, "Token \u00e9t\u00e9"],
    ids=["no_key", "extra_part", "unknown_key", "oversized_key", "non_ascii"],
)
def test_bad_authorization_headers_are_401_with_a_detail(header, sender):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/v1/messages/")

    assert response.status_code == 401
    assert response.json()["detail"]


def test_keyword_is_case_insensitive(sender):
    key = token_create(owner=sender)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"token {key}")

    assert client.get("/api/v1/messages/").status_code == 200


# --- WebSocket tickets ------------------------------------------------------------------------


def _expires_at(body: dict) -> datetime:
    return datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))


@pytest.mark.parametrize("persona", ["sender", "mobile_user"])
def test_ticket_is_issued_for_60_seconds_to_senders_and_mobile_users(request, redis, persona):
    principal = request.getfixturevalue(persona)
    before = timezone.now()

    response = client_for(principal).post(TICKETS)

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"ticket", "expires_at"}
    assert before + timedelta(seconds=59) <= _expires_at(body) <= timezone.now() + timedelta(seconds=61)
    assert 0 < redis.ttl(TICKET_PREFIX + body["ticket"]) <= 60


@pytest.mark.parametrize("persona", ["sender", "mobile_user"])
def test_ticket_resolves_to_its_principal_once_and_never_twice(request, redis, persona):
    principal = request.getfixturevalue(persona)
    ticket = client_for(principal).post(TICKETS).json()["ticket"]

    resolved = principal_for_ticket(ticket=ticket)

    assert type(resolved) is (User if persona == "sender" else MobileUser)
    assert resolved.pk == principal.pk
    assert principal_for_ticket(ticket=ticket) is None
    assert not redis.exists(TICKET_PREFIX + ticket)


def test_each_ticket_is_distinct(sender_client, redis):
    tickets = {sender_client.post(TICKETS).json()["ticket"] for _ in range(3)}

    assert len(tickets) == 3


def test_ticket_is_refused_when_its_principal_was_deactivated_meanwhile(mobile_user, redis):
    ticket = client_for(mobile_user).post(TICKETS).json()["ticket"]
    MobileUser.objects.filter(pk=mobile_user.pk).update(is_active=False)

    assert principal_for_ticket(ticket=ticket) is None


@pytest.mark.parametrize("ticket", ["", "unknown", "x" * 500])
def test_unknown_tickets_resolve_to_nobody(redis, ticket):
    assert principal_for_ticket(ticket=ticket) is None


def test_ticket_cannot_be_used_as_a_token(sender, redis):
    ticket = client_for(sender).post(TICKETS).json()["ticket"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ticket}")

    assert client.post(TICKETS).status_code == 401


def test_ticket_needs_authentication(anonymous_client, redis):
    response = anonymous_client.post(TICKETS)

    assert response.status_code == 401
    assert response.json()["detail"]
    assert redis.keys(TICKET_PREFIX + "*") == []


def test_token_keys_never_start_with_a_dash(sender, monkeypatch):
    """A key like "-abc" would be read as an option by command-line tools (ws_listen.py)."""
    import secrets

    keys = iter(["-first-try-is-an-option", "second-try-is-fine"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(keys))

    assert token_create(owner=sender) == "second-try-is-fine"


# --- the per-process principal cache ----------------------------------------------------------


@pytest.fixture
def token_cache(settings):
    from apps.accounts.selectors import principal_cache_clear

    settings.AUTH_TOKEN_CACHE_SECONDS = 10
    principal_cache_clear()
    yield
    principal_cache_clear()


def test_a_remembered_sender_is_authenticated_and_authorised_without_a_query(
    token_cache, sender, django_assert_num_queries
):
    key = token_create(owner=sender)
    first = principal_for_token(key=key)
    assert first.has_perm("accounts.send_message")

    with django_assert_num_queries(0):
        again = principal_for_token(key=key)
        assert again.has_perm("accounts.send_message")
    assert again == sender


def test_a_deactivated_owner_is_refused_once_its_cache_entry_expires(token_cache, sender, monkeypatch):
    import time as real_time

    from apps.accounts import selectors

    key = token_create(owner=sender)
    assert principal_for_token(key=key) == sender
    User.objects.filter(pk=sender.pk).update(is_active=False)
    assert principal_for_token(key=key) == sender  # within AUTH_TOKEN_CACHE_SECONDS

    later = real_time.monotonic() + 11
    monkeypatch.setattr(selectors.time, "monotonic", lambda: later)
    assert principal_for_token(key=key) is None


def test_unknown_tokens_are_never_remembered(token_cache, sender, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert principal_for_token(key="no-such-token") is None
    with django_assert_num_queries(1):
        assert principal_for_token(key="no-such-token") is None
