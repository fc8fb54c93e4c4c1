"""Send to the channel layer from synchronous code (Celery tasks, services).

`async_to_sync` in a thread without an event loop makes a new loop per call, and
channels-redis then opens new connections each time. Instead each process keeps one event
loop in a daemon thread, with the channel layer's connection pool living on it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any

from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer

from apps.common.breaker import CHANNEL_LAYER, CircuitOpen, breaker

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid: int | None = None

SEND_TIMEOUT_SECONDS = 10


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop, _pid
    with _lock:
        if _loop is None or _pid != os.getpid():  # a forked worker needs its own loop
            _loop = asyncio.new_event_loop()
            _pid = os.getpid()
            threading.Thread(target=_loop.run_forever, name="channel-layer", daemon=True).start()
        return _loop


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run `coro` on this process's channel-layer loop and return its result."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise RuntimeError("bridge.run is for synchronous callers; await the layer directly")
    future = asyncio.run_coroutine_threadsafe(coro, _event_loop())
    return future.result(timeout=SEND_TIMEOUT_SECONDS)


def group_send(group: str, event: dict) -> None:
    """Send `event` to every connection in `group`; raise if the channel layer is unreachable.

    Guarded by the channel layer's circuit breaker: while it is open this raises CircuitOpen
    (a ConnectionError) at once, and callers keep their messages `pending` for a retry.
    """
    with breaker(CHANNEL_LAYER).guard():
        run(get_channel_layer().group_send(group, event))


def group_send_many(events: list[tuple[str, dict]]) -> list[BaseException | None]:
    """Send each (group, event) concurrently; return each one's exception, or None if it went.

    One delivery round counts as one call to the channel layer's breaker: a failure of any
    send counts as a failure. While the breaker is open this raises CircuitOpen at once.
    """
    if not events:
        return []
    layer = get_channel_layer()

    async def send_all() -> list[BaseException | None]:
        if isinstance(layer, RedisPubSubChannelLayer):
            return await _publish_pipelined(layer, events)
        results = await asyncio.gather(
            *(layer.group_send(group, event) for group, event in events), return_exceptions=True
        )
        return [r if isinstance(r, BaseException) else None for r in results]

    guard = breaker(CHANNEL_LAYER)
    if not guard.allow():
        raise CircuitOpen(CHANNEL_LAYER)
    try:
        outcomes = run(send_all())
    except BaseException:
        guard.record(ok=False)
        raise
    guard.record(ok=not any(outcomes))
    return outcomes


# The channels-redis versions whose pub/sub layer internals _publish_pipelined uses (the loop
# layer's group channel names and shards, a shard's lock and client); tests/ops/test_patches.py
# fails on others.
CHANNELS_REDIS_TESTED = ("4.3.",)


async def _publish_pipelined(
    layer: RedisPubSubChannelLayer, events: list[tuple[str, dict]]
) -> list[BaseException | None]:
    """Publish every event to its group as the layer's group_send would, one pipeline per shard.

    group_send publishes under its shard's lock and waits for each reply: a chunk for 500
    recipients was 500 round trips in a row. Here each shard gets every PUBLISH in one write
    and one read; an error fails that shard's events (their messages go back to `pending`).
    """
    loop_layer = layer._get_layer()
    by_shard: dict[Any, list[tuple[int, str, bytes]]] = {}
    for i, (group, event) in enumerate(events):
        channel = loop_layer._get_group_channel_name(group)
        by_shard.setdefault(loop_layer._get_shard(channel), []).append((i, channel, layer.serialize(event)))
    outcomes: list[BaseException | None] = [None] * len(events)
    for shard, items in by_shard.items():
        try:
            async with shard._lock:
                shard._ensure_redis()
                pipe = shard._redis.pipeline(transaction=False)
                for _, channel, data in items:
                    pipe.publish(channel, data)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - reported per event, as gather's would be
            for i, _, _ in items:
                outcomes[i] = exc
    return outcomes
