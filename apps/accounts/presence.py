"""Who is online: connection heartbeats in Redis, shared by every web and worker process.

Per user, a hash `presence:m:<id>` (mobile users) or `presence:b:<id>` (business users) maps each
open connection (its channel name) to the time of its last heartbeat; a sorted set
`presence:conns` orders all connections by that time so the stale-connection sweep finds old
ones without scanning users. A user is online while one of its connections heartbeat within
PRESENCE_STALE_SECONDS.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings

from apps.accounts.models import PartyKind
from apps.accounts.party import Party
from apps.common import clock
from apps.common.redis import redis_client

CONNECTIONS = "presence:conns"
# Connection members are "<id>|<channel>" for mobile users, "b:<id>|<channel>" for business ones.
_MEMBER_PREFIX = {PartyKind.MOBILE: "", PartyKind.BUSINESS: "b:"}
_KEY_PREFIX = {PartyKind.MOBILE: "presence:m:", PartyKind.BUSINESS: "presence:b:"}


def _user_key(kind: PartyKind, user_id: int) -> str:
    return f"{_KEY_PREFIX[kind]}{user_id}"


def _member(party: Party, channel_name: str) -> str:
    return f"{_MEMBER_PREFIX[party.kind]}{party.id}|{channel_name}"


def _parse_member(member: bytes) -> tuple[Party, str]:
    """Return the party and the channel name of a connection member."""
    user, _, channel_name = member.decode().partition("|")
    if user.startswith("b:"):
        return Party.business(int(user[2:])), channel_name
    return Party.mobile(int(user)), channel_name


def connection_seen(*, party: Party, channel_name: str, now: float | None = None) -> None:
    """Record a connection of `party` as alive now (on connect and on every heartbeat)."""
    now = now if now is not None else clock.timestamp()
    key = _user_key(party.kind, party.id)
    pipe = redis_client().pipeline(transaction=False)
    pipe.hset(key, channel_name, now)
    pipe.expire(key, settings.PRESENCE_RECORD_TTL_SECONDS)
    pipe.zadd(CONNECTIONS, {_member(party, channel_name): now})
    pipe.execute()


def connection_closed(*, party: Party, channel_name: str) -> None:
    """Forget a connection that closed."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.hdel(_user_key(party.kind, party.id), channel_name)
    pipe.zrem(CONNECTIONS, _member(party, channel_name))
    pipe.execute()


def online_user_ids(user_ids: Iterable[int], *, kind: PartyKind, now: float | None = None) -> set[int]:
    """Return the users of `kind` among `user_ids` that have a live connection."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return set()
    threshold = (now if now is not None else clock.timestamp()) - settings.PRESENCE_STALE_SECONDS
    pipe = redis_client().pipeline(transaction=False)
    for user_id in ids:
        pipe.hvals(_user_key(kind, user_id))
    beats = pipe.execute()
    return {uid for uid, values in zip(ids, beats, strict=True) if any(float(v) > threshold for v in values)}


def online_parties(parties: Iterable[Party], *, now: float | None = None) -> set[Party]:
    """Return the parties among `parties` that have a live connection (one Redis round trip per kind)."""
    ids: dict[PartyKind, list[int]] = {kind: [] for kind in _KEY_PREFIX}
    for party in parties:
        ids[party.kind].append(party.id)
    return {
        Party(kind, uid)
        for kind, of_kind in ids.items()
        for uid in online_user_ids(of_kind, kind=kind, now=now)
    }


def is_online(party: Party) -> bool:
    return party.id in online_user_ids([party.id], kind=party.kind)


def stale_connections(*, now: float | None = None) -> tuple[set[Party], int]:
    """Find connections without a heartbeat for PRESENCE_STALE_SECONDS.

    Return the parties that have no live connection left, and drop connection records older
    than PRESENCE_RECORD_TTL_SECONDS (their count is the second value).
    """
    now = now if now is not None else clock.timestamp()
    client = redis_client()
    stale = client.zrangebyscore(CONNECTIONS, "-inf", now - settings.PRESENCE_STALE_SECONDS)
    parties = {_parse_member(m)[0] for m in stale}
    dropped = 0
    expired = client.zrangebyscore(CONNECTIONS, "-inf", now - settings.PRESENCE_RECORD_TTL_SECONDS)
    if expired:
        pipe = client.pipeline(transaction=False)
        for member in expired:
            party, channel_name = _parse_member(member)
            pipe.hdel(_user_key(party.kind, party.id), channel_name)
            pipe.zrem(CONNECTIONS, member)
        pipe.execute()
        dropped = len(expired)
    return parties - online_parties(parties, now=now), dropped
