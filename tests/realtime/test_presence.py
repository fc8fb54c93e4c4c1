"""Presence: connection heartbeats in the real test Redis (SPEC.md section 2, "Presence")."""

from __future__ import annotations

from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.accounts import presence
from apps.accounts.models import PartyKind
from apps.accounts.party import Party
from apps.common.redis import redis_client

NOW = 1_800_000_000.0
USER = 7
OTHER = 8


def _stale() -> float:
    return settings.PRESENCE_STALE_SECONDS


def _ttl() -> float:
    return settings.PRESENCE_RECORD_TTL_SECONDS


def _fields(redis, user_id: int) -> set[str]:
    return {k.decode() for k in redis.hkeys(f"presence:m:{user_id}")}


def _members(redis) -> set[str]:
    return {m.decode() for m in redis.zrange(presence.CONNECTIONS, 0, -1)}


def test_connection_seen_makes_the_user_online(redis):
    presence.connection_seen(party=Party.mobile(USER), channel_name="specific.a!1")
    assert presence.is_online(Party.mobile(USER))
    assert not presence.is_online(Party.mobile(OTHER))
    assert _fields(redis, USER) == {"specific.a!1"}
    assert _members(redis) == {f"{USER}|specific.a!1"}


def test_connection_record_expires_after_the_record_ttl(redis):
    presence.connection_seen(party=Party.mobile(USER), channel_name="c1")
    assert 0 < redis.ttl(f"presence:m:{USER}") <= _ttl()


def test_connection_closed_forgets_only_that_connection(redis):
    presence.connection_seen(party=Party.mobile(USER), channel_name="c1")
    presence.connection_seen(party=Party.mobile(USER), channel_name="c2")
    presence.connection_closed(party=Party.mobile(USER), channel_name="c1")
    assert presence.is_online(Party.mobile(USER))
    assert _fields(redis, USER) == {"c2"}
    assert _members(redis) == {f"{USER}|c2"}

    presence.connection_closed(party=Party.mobile(USER), channel_name="c2")
    assert not presence.is_online(Party.mobile(USER))
    assert _members(redis) == set()


def test_closing_an_unknown_connection_changes_nothing(redis):
    presence.connection_seen(party=Party.mobile(USER), channel_name="c1")
    presence.connection_closed(party=Party.mobile(USER), channel_name="never-opened")
    presence.connection_closed(party=Party.mobile(OTHER), channel_name="c1")
    assert presence.online_user_ids([USER, OTHER], kind=PartyKind.MOBILE) == {USER}
    assert _members(redis) == {f"{USER}|c1"}


def test_online_user_ids_ignores_heartbeats_older_than_the_stale_limit(redis):
    presence.connection_seen(party=Party.mobile(USER), channel_name="c1", now=NOW - _stale() + 1)
    presence.connection_seen(party=Party.mobile(OTHER), channel_name="c1", now=NOW - _stale() - 1)
    assert presence.online_user_ids([USER, OTHER, 99], kind=PartyKind.MOBILE, now=NOW) == {USER}
    # The same heartbeats, looked at a minute later: both stale.
    assert presence.online_user_ids([USER, OTHER], kind=PartyKind.MOBILE, now=NOW + _stale()) == set()


def test_heartbeat_exactly_at_the_stale_limit_is_offline(redis):
    presence.connection_seen(party=Party.mobile(USER), channel_name="c1", now=NOW - _stale())
    assert presence.online_user_ids([USER], kind=PartyKind.MOBILE, now=NOW) == set()


def test_a_new_heartbeat_brings_a_stale_connection_back(redis):
    presence.connection_seen(party=Party.mobile(USER), channel_name="c1", now=NOW - 10 * _stale())
    presence.connection_seen(party=Party.mobile(USER), channel_name="c1", now=NOW)
    assert presence.online_user_ids([USER], kind=PartyKind.MOBILE, now=NOW) == {USER}
    assert redis.zscore(presence.CONNECTIONS, f"{USER}|c1") == NOW


def test_online_user_ids_of_nobody_is_empty(redis):
    assert presence.online_user_ids([], kind=PartyKind.MOBILE) == set()
    assert presence.online_user_ids([USER, USER], kind=PartyKind.MOBILE) == set()


def test_user_with_one_stale_and_one_live_connection_stays_online(redis):
    presence.connection_seen(party=Party.mobile(USER), channel_name="old", now=NOW - _stale() - 5)
    presence.connection_seen(party=Party.mobile(USER), channel_name="new", now=NOW - 1)
    assert presence.online_user_ids([USER], kind=PartyKind.MOBILE, now=NOW) == {USER}
    offline, dropped = presence.stale_connections(now=NOW)
    assert (offline, dropped) == (set(), 0)
    assert _fields(redis, USER) == {"old", "new"}


def test_stale_connections_returns_users_with_no_live_connection(redis):
    presence.connection_seen(party=Party.mobile(USER), channel_name="c1", now=NOW - _stale() - 1)
    presence.connection_seen(party=Party.mobile(OTHER), channel_name="c1", now=NOW - 1)
    offline, dropped = presence.stale_connections(now=NOW)
    assert offline == {Party.mobile(USER)}
    # A stale record younger than the record TTL is kept (the user may still heartbeat).
    assert dropped == 0
    assert _members(redis) == {f"{USER}|c1", f"{OTHER}|c1"}


def test_stale_connections_drops_records_older_than_the_record_ttl(redis):
    presence.connection_seen(party=Party.mobile(USER), channel_name="ancient", now=NOW - _ttl() - 1)
    presence.connection_seen(party=Party.mobile(USER), channel_name="stale", now=NOW - _stale() - 1)
    presence.connection_seen(party=Party.mobile(OTHER), channel_name="ancient", now=NOW - _ttl() - 1)
    presence.connection_seen(party=Party.mobile(OTHER), channel_name="live", now=NOW)

    offline, dropped = presence.stale_connections(now=NOW)

    assert offline == {Party.mobile(USER)}
    assert dropped == 2
    assert _fields(redis, USER) == {"stale"}
    assert _fields(redis, OTHER) == {"live"}
    assert _members(redis) == {f"{USER}|stale", f"{OTHER}|live"}
    # Running it again finds the same offline user but drops nothing more.
    assert presence.stale_connections(now=NOW) == ({Party.mobile(USER)}, 0)


def test_stale_connections_without_connections_finds_nothing(redis):
    assert presence.stale_connections(now=NOW) == (set(), 0)


def test_channel_names_with_separator_characters_round_trip(redis):
    name = "specific.abc!def|ghi"
    presence.connection_seen(party=Party.mobile(USER), channel_name=name, now=NOW - _ttl() - 1)
    assert presence.stale_connections(now=NOW) == ({Party.mobile(USER)}, 1)
    assert _fields(redis, USER) == set()
    assert _members(redis) == set()


# Ages in whole seconds (exact in floating point), so the limits themselves are covered.
ages = st.integers(min_value=0, max_value=700)
connections = st.dictionaries(
    keys=st.integers(min_value=1, max_value=6),
    values=st.lists(ages, min_size=1, max_size=3),
    max_size=6,
)


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(connections=connections)
def test_presence_agrees_with_heartbeat_ages(connections, redis):
    """Online iff a heartbeat is younger than the stale limit; the sweep drops only old records."""
    client = redis_client()
    client.flushdb()
    for user_id, user_ages in connections.items():
        for n, age in enumerate(user_ages):
            presence.connection_seen(party=Party.mobile(user_id), channel_name=f"c{n}", now=NOW - age)

    live = {u for u, a in connections.items() if any(age < _stale() for age in a)}
    stale = {u for u, a in connections.items() if any(age >= _stale() for age in a)}
    kept = {f"{u}|c{n}" for u, a in connections.items() for n, age in enumerate(a) if age < _ttl()}
    total = sum(len(a) for a in connections.values())

    assert presence.online_user_ids(list(connections), kind=PartyKind.MOBILE, now=NOW) == live
    offline, dropped = presence.stale_connections(now=NOW)
    assert offline == {Party.mobile(u) for u in stale - live}
    assert dropped == total - len(kept)
    assert _members(client) == kept
    # Dropping records never changes who is online.
    assert presence.online_user_ids(list(connections), kind=PartyKind.MOBILE, now=NOW) == live


def test_business_and_mobile_users_with_one_id_have_separate_presence(redis):
    presence.connection_seen(party=Party.business(USER), channel_name="c1", now=NOW - _stale() - 1)
    presence.connection_seen(party=Party.mobile(USER), channel_name="c2", now=NOW)

    assert presence.online_user_ids([USER], kind=PartyKind.MOBILE, now=NOW) == {USER}
    assert presence.online_user_ids([USER], kind=PartyKind.BUSINESS, now=NOW) == set()
    offline, _ = presence.stale_connections(now=NOW)
    assert offline == {Party.business(USER)}
    presence.connection_closed(party=Party.mobile(USER), channel_name="c2")
    assert presence.online_user_ids([USER], kind=PartyKind.MOBILE, now=NOW) == set()
