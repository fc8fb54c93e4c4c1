"""Party: a message's recipient or author as a kind and an id, never an id alone."""

from __future__ import annotations

import dataclasses

import pytest

from apps.accounts.models import PartyKind
from apps.accounts.party import Party


def test_parties_of_the_same_kind_and_id_are_equal_and_hash_alike():
    assert Party.mobile(7) == Party(PartyKind.MOBILE, 7) == Party("mobile", 7)
    assert len({Party.mobile(7), Party("mobile", 7), Party.business(7)}) == 2


def test_a_mobile_user_and_a_business_user_with_the_same_id_are_different_parties():
    assert Party.mobile(7) != Party.business(7)
    assert Party.mobile(7).group == "mobile.7"
    assert Party.business(7).group == "business.7"


def test_a_plain_kind_string_becomes_the_partykind_member():
    party = Party("business", 3)
    assert party.kind is PartyKind.BUSINESS
    assert not party.is_mobile


@pytest.mark.parametrize("kind", ["sender", "", "MOBILE", None])
def test_an_unknown_kind_is_refused(kind):
    with pytest.raises(ValueError):
        Party(kind, 1)


def test_of_a_mobile_user_and_of_a_business_user(sender, mobile_user):
    assert Party.of(mobile_user) == Party.mobile(mobile_user.pk)
    assert Party.of(sender) == Party.business(sender.pk)


def test_a_party_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Party.mobile(1).id = 2  # type: ignore[misc]
