"""The operators' admin for senders, mobile users and API tokens."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from apps.accounts.models import ApiToken, MobileUser, User
from apps.accounts.services import token_create
from tests.factories import MobileUserFactory, SenderFactory

USERS = reverse("admin:accounts_user_changelist")
MOBILE_USERS = reverse("admin:accounts_mobileuser_changelist")
TOKENS = reverse("admin:accounts_apitoken_changelist")


def rows(response) -> list:
    return list(response.context["cl"].result_list)


def api_status(key: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get("/api/v1/messages/").status_code


def messages_shown(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.mark.django_db
def test_admin_index_lists_users_mobile_users_and_tokens(admin_client):
    response = admin_client.get(reverse("admin:index"))

    assert response.status_code == 200
    for url in (USERS, MOBILE_USERS, TOKENS):
        assert url in response.content.decode()


# --- Senders --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_sender_changelist_shows_tier_and_filters_by_it(admin_client):
    premium = SenderFactory(tier="premium")
    SenderFactory(tier="basic")

    everything = admin_client.get(USERS)
    filtered = admin_client.get(USERS, {"tier__exact": "premium"})

    assert everything.status_code == 200
    assert "Tier" in everything.content.decode()
    assert rows(filtered) == [premium]


@pytest.mark.django_db
def test_sender_change_page_has_tier_and_lists_tokens_without_digest(admin_client):
    sender = SenderFactory(tier="enterprise")
    key = token_create(owner=sender)
    token = ApiToken.objects.get(user=sender)

    response = admin_client.get(reverse("admin:accounts_user_change", args=[sender.pk]))

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form["tier"].value() == "enterprise"
    html = response.content.decode()
    assert token.prefix in html
    assert token.digest not in html
    assert key not in html


@pytest.mark.django_db
def test_adding_a_sender_sets_tier_password_and_default_permissions(admin_client):
    response = admin_client.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "acme",
            "tier": "premium",
            "usable_password": "true",
            "password1": "a-long-enough-passphrase",
            "password2": "a-long-enough-passphrase",
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    user = User.objects.get(username="acme")
    assert user.tier == "premium"
    assert user.check_password("a-long-enough-passphrase")
    assert user.has_perm("accounts.send_message") and user.has_perm("accounts.chat")
    assert not user.has_perm("accounts.send_broadcast")
    assert not user.has_perm("accounts.manage_dead_letters")
    assert not ApiToken.objects.filter(user=user).exists()


# --- Mobile users ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_mobile_user_changelist_searches_by_phone_and_filters_by_active(admin_client):
    wanted = MobileUserFactory(phone_number="+14155550123")
    other = MobileUserFactory(phone_number="+14155550999", is_active=False)

    listing = admin_client.get(MOBILE_USERS)
    formatted = admin_client.get(MOBILE_USERS, {"q": "+1 (415) 555-0123"})
    partial = admin_client.get(MOBILE_USERS, {"q": "0123"})
    inactive = admin_client.get(MOBILE_USERS, {"is_active__exact": "0"})

    assert listing.status_code == 200
    html = listing.content.decode()
    for header in ("Phone number", "Name", "Is active", "Last seq", "Created at"):
        assert header in html
    assert rows(formatted) == [wanted]
    assert rows(partial) == [wanted]
    assert rows(inactive) == [other]


@pytest.mark.django_db
def test_mobile_user_edit_keeps_last_seq_and_normalises_phone(admin_client):
    mobile = MobileUserFactory(phone_number="+14155550123", name="Ada")
    MobileUser.objects.filter(pk=mobile.pk).update(last_seq=7)
    url = reverse("admin:accounts_mobileuser_change", args=[mobile.pk])

    page = admin_client.get(url)
    response = admin_client.post(
        url,
        {
            "phone_number": "+1 415 555 0124",
            "name": "Ada L.",
            "is_active": "",
            "last_seq": "999",
            "apitoken_set-TOTAL_FORMS": "0",
            "apitoken_set-INITIAL_FORMS": "0",
        },
    )

    assert "last_seq" not in page.context["adminform"].form.fields
    assert response.status_code == 302
    mobile.refresh_from_db()
    assert (mobile.phone_number, mobile.name, mobile.is_active) == ("+14155550124", "Ada L.", False)
    assert mobile.last_seq == 7


@pytest.mark.django_db
def test_adding_a_mobile_user_normalises_phone_and_rejects_invalid_ones(admin_client):
    url = reverse("admin:accounts_mobileuser_add")

    created = admin_client.post(url, {"phone_number": "+1 (415) 555-0199", "name": "Bo", "is_active": "on"})
    refused = admin_client.post(url, {"phone_number": "0123", "name": "Nope", "is_active": "on"})
    duplicate = admin_client.post(url, {"phone_number": "+14155550199", "name": "Twin", "is_active": "on"})

    assert created.status_code == 302
    assert MobileUser.objects.get(name="Bo").phone_number == "+14155550199"
    assert refused.status_code == 200
    assert "phone_number" in refused.context["adminform"].form.errors
    assert duplicate.status_code == 200
    assert "phone_number" in duplicate.context["adminform"].form.errors
    assert MobileUser.objects.count() == 1


@pytest.mark.django_db
def test_revoking_a_token_from_the_mobile_user_page_deletes_only_that_token(admin_client):
    mobile = MobileUserFactory()
    revoked_key = token_create(owner=mobile)
    kept_key = token_create(owner=mobile)
    revoked = ApiToken.objects.get(digest=ApiToken.digest_of(revoked_key))
    kept = ApiToken.objects.get(digest=ApiToken.digest_of(kept_key))
    url = reverse("admin:accounts_mobileuser_change", args=[mobile.pk])

    page = admin_client.get(url)
    response = admin_client.post(
        url,
        {
            "phone_number": mobile.phone_number,
            "name": mobile.name,
            "is_active": "on",
            "apitoken_set-TOTAL_FORMS": "2",
            "apitoken_set-INITIAL_FORMS": "2",
            "apitoken_set-0-id": str(revoked.pk),
            "apitoken_set-0-mobile_user": str(mobile.pk),
            "apitoken_set-0-DELETE": "on",
            "apitoken_set-1-id": str(kept.pk),
            "apitoken_set-1-mobile_user": str(mobile.pk),
        },
    )

    assert page.status_code == 200
    assert revoked.digest not in page.content.decode()
    assert response.status_code == 302
    assert list(ApiToken.objects.filter(mobile_user=mobile)) == [kept]


# --- API tokens -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_token_pages_show_prefix_and_owner_but_never_the_digest(admin_client):
    sender = SenderFactory(username="acme")
    mobile = MobileUserFactory(phone_number="+14155550123")
    token_create(owner=sender)
    token_create(owner=mobile)
    tokens = list(ApiToken.objects.all())

    listing = admin_client.get(TOKENS)
    searched = admin_client.get(TOKENS, {"q": "acme"})
    page = admin_client.get(reverse("admin:accounts_apitoken_change", args=[tokens[0].pk]))

    assert (listing.status_code, page.status_code) == (200, 200)
    html = listing.content.decode() + page.content.decode()
    for token in tokens:
        assert token.prefix in listing.content.decode()
        assert token.digest not in html
    assert "acme" in listing.content.decode() and "+14155550123" in listing.content.decode()
    assert rows(searched) == [ApiToken.objects.get(user=sender)]
    assert page.context["adminform"].form.fields == {}
    assert 'name="digest"' not in html


@pytest.mark.django_db
def test_tokens_cannot_be_added_or_edited_in_the_admin(admin_client):
    sender = SenderFactory()
    token_create(owner=sender)
    token = ApiToken.objects.get()

    add = admin_client.get(reverse("admin:accounts_apitoken_add"))
    edit = admin_client.post(
        reverse("admin:accounts_apitoken_change", args=[token.pk]), {"digest": "0" * 64, "prefix": "hijacked"}
    )

    assert (add.status_code, edit.status_code) == (403, 403)
    assert ApiToken.objects.get() == token
    assert ApiToken.objects.values_list("digest", "prefix").get() == (token.digest, token.prefix)


@pytest.mark.django_db
def test_bulk_revoke_deletes_tokens_and_their_keys_stop_working(admin_client):
    sender = SenderFactory()
    revoked_key = token_create(owner=sender)
    kept_key = token_create(owner=sender)
    revoked = ApiToken.objects.get(digest=ApiToken.digest_of(revoked_key))
    assert api_status(revoked_key) == 200

    response = admin_client.post(
        TOKENS,
        {"action": "delete_selected", "_selected_action": [str(revoked.pk)], "index": "0", "post": "yes"},
        follow=True,
    )

    assert messages_shown(response) == ["Successfully deleted 1 api token."]
    assert not ApiToken.objects.filter(pk=revoked.pk).exists()
    assert api_status(revoked_key) == 401
    assert api_status(kept_key) == 200
    assert User.objects.filter(pk=sender.pk).exists()


@pytest.mark.django_db
def test_staff_without_account_permissions_cannot_open_account_pages():
    client = Client()
    client.force_login(SenderFactory(is_staff=True))

    statuses = [client.get(url).status_code for url in (USERS, MOBILE_USERS, TOKENS)]

    assert statuses == [403, 403, 403]
