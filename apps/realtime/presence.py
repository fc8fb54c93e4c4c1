"""Who is online: connection heartbeats in Redis, shared by every web and worker process.

Per mobile user, a hash `presence:m:<id>` maps each open connection (its channel name) to the
time of its last heartbeat; a sorted set `presence:conns` orders all connections by that time
so the stale-connection sweep finds old ones without scanning users. A user is online while one
of its connections heartbeat within PRESENCE_STALE_SECONDS.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from django.conf import settings

from apps.common.redis import redis_client

CONNECTIONS = "presence:conns"


def _user_key(user_id: int) -> str:
    return f"presence:m:{user_id}"


def _member(user_id: int, channel_name: str) -> str:
    return f"{user_id}|{channel_name}"


def connection_seen(*, user_id: int, channel_name: str, now: float | None = None) -> None:
    """Record a connection of `user_id` as alive now (on connect and on every heartbeat)."""
    now = now if now is not None else time.time()
    pipe = redis_client().pipeline(transaction=False)
    pipe.hset(_user_key(user_id), channel_name, now)
    pipe.expire(_user_key(user_id), settings.PRESENCE_RECORD_TTL_SECONDS)
    pipe.zadd(CONNECTIONS, {_member(user_id, channel_name): now})
    pipe.execute()


def connection_closed(*, user_id: int, channel_name: str) -> None:
    """Forget a connection that closed."""
    pipe = redis_client().pipeline(transaction=False)
    pipe.hdel(_user_key(user_id), channel_name)
    pipe.zrem(CONNECTIONS, _member(user_id, channel_name))
    pipe.execute()


def online_user_ids(user_ids: Iterable[int], *, now: float | None = None) -> set[int]:
    """Return the users among `user_ids` that have a live connection."""
    ids = list(dict.fromkeys(user_ids))
    if not ids:
        return set()
    threshold = (now if now is not None else time.time()) - settings.PRESENCE_STALE_SECONDS
    pipe = redis_client().pipeline(transaction=False)
    for user_id in ids:
        pipe.hvals(_user_key(user_id))
    beats = pipe.execute()
    return {uid for uid, values in zip(ids, beats, strict=True) if any(float(v) > threshold for v in values)}


def is_online(user_id: int) -> bool:
    return user_id in online_user_ids([user_id])


def stale_connections(*, now: float | None = None) -> tuple[set[int], int]:
    """Find connections without a heartbeat for PRESENCE_STALE_SECONDS.

    Return the users that have no live connection left, and drop connection records older
    than PRESENCE_RECORD_TTL_SECONDS (their count is the second value).
    """
    now = now if now is not None else time.time()
    client = redis_client()
    stale = client.zrangebyscore(CONNECTIONS, "-inf", now - settings.PRESENCE_STALE_SECONDS)
    user_ids = {int(m.decode().partition("|")[0]) for m in stale}
    dropped = 0
    expired = client.zrangebyscore(CONNECTIONS, "-inf", now - settings.PRESENCE_RECORD_TTL_SECONDS)
    if expired:
        pipe = client.pipeline(transaction=False)
        for member in expired:
            user_id, _, channel_name = member.decode().partition("|")
            pipe.hdel(_user_key(int(user_id)), channel_name)
            pipe.zrem(CONNECTIONS, member)
        pipe.execute()
        dropped = len(expired)
    offline = user_ids - online_user_ids(user_ids, now=now)
    return offline, dropped
