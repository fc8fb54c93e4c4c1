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
from apps.common import clock
from apps.common.redis import redis_client

CONNECTIONS = "presence:conns"
MOBILE = PartyKind.MOBILE
# Connection members are "<id>|<channel>" for mobile users, "b:<id>|<channel>" for business ones.
_MEMBER_PREFIX = {PartyKind.MOBILE: "", PartyKind.BUSINESS: "b:"}
_KEY_PREFIX = {PartyKind.MOBILE: "presence:m:", PartyKind.BUSINESS: "presence:b:"}


def _user_key(user_id: int, kind: str = MOBILE) -> str:
    return f"{_KEY_PREFIX[kind]}{user_id}"


def _member(user_id: int, channel_name: str, kind: str = MOBILE) -> str:
    return f"{_MEMBER_PREFIX[kind]}{user_id}|{channel_name}"


def _parse_member(member: bytes) -> tuple[str, int, str]:
    """Return (kind, user id, channel name) of a connection member."""
    user, _, channel_name = member.decode().partition("|")
    if user.startswith("b:"):
        return PartyKind.BUSINESS, int(user[2:]), channel_name
    return PartyKind.MOBILE, int(user), channel_name


def connection_seen(*, user_id: int, channel_name: str, kind: str = MOBILE, now: float | None = None) -> None:
    """Record a connection of `user_id` as alive now (on connect and on every heartbeat)."""
    now = now if now is not None else clock.timestamp()
    key = _user_key(user_id, kind)
    pipe = redis_client().pipeline(transaction=False)
    pipe.hset(key, channel_name, now)
    pipe.expire(key, settings.PRESENCE_RECORD_TTL_SECONDS)
    pipe.zadd(CONNECTIONS, {_member(user_id, channel_name, kind): now})
    pipe.execute()


def connection_closed(*, user_id: int, channel_name: str, kind: str = MOBILE) -> None:
    """Forget a connection that closed."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.hdel(_user_key(user_id, kind), channel_name)
    pipe.zrem(CONNECTIONS, _member(user_id, channel_name, kind))
    pipe.execute()


def online_user_ids(user_ids: Iterable[int], *, kind: str = MOBILE, now: float | None = None) -> set[int]:
    """Return the users (of `kind`) among `user_ids` that have a live connection."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return set()
    threshold = (now if now is not None else clock.timestamp()) - settings.PRESENCE_STALE_SECONDS
    pipe = redis_client().pipeline(transaction=False)
    for user_id in ids:
        pipe.hvals(_user_key(user_id, kind))
    beats = pipe.execute()
    return {uid for uid, values in zip(ids, beats, strict=True) if any(float(v) > threshold for v in values)}


def is_online(user_id: int, kind: str = MOBILE) -> bool:
    return user_id in online_user_ids([user_id], kind=kind)


def stale_connections(*, now: float | None = None) -> tuple[set[tuple[str, int]], int]:
    """Find connections without a heartbeat for PRESENCE_STALE_SECONDS.

    Return the users, as (kind, id), that have no live connection left, and drop connection
    records older than PRESENCE_RECORD_TTL_SECONDS (their count is the second value).
    """
    now = now if now is not None else clock.timestamp()
    client = redis_client()
    stale = client.zrangebyscore(CONNECTIONS, "-inf", now - settings.PRESENCE_STALE_SECONDS)
    users = {_parse_member(m)[:2] for m in stale}
    dropped = 0
    expired = client.zrangebyscore(CONNECTIONS, "-inf", now - settings.PRESENCE_RECORD_TTL_SECONDS)
    if expired:
        pipe = client.pipeline(transaction=False)
        for member in expired:
            kind, user_id, channel_name = _parse_member(member)
            pipe.hdel(_user_key(user_id, kind), channel_name)
            pipe.zrem(CONNECTIONS, member)
        pipe.execute()
        dropped = len(expired)
    offline: set[tuple[str, int]] = set()
    for kind in _KEY_PREFIX:
        ids = {uid for k, uid in users if k == kind}
        offline |= {(kind, uid) for uid in ids - online_user_ids(ids, kind=kind, now=now)}
    return offline, dropped
