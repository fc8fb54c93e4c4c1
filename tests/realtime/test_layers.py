"""The channel layer's pool: a burst of concurrent sends waits for connections, none fails."""

from __future__ import annotations

import asyncio

from channels_redis.core import RedisChannelLayer
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError

from apps.realtime.layers import BlockingPoolChannelLayer

from .conftest import async_test

GROUPS = 200


def _layer(cls: type[RedisChannelLayer], *, max_connections: int) -> RedisChannelLayer:
    host = {**settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0], "max_connections": max_connections}
    return cls(hosts=[host], prefix="test-layers", capacity=GROUPS)


async def _burst(layer: RedisChannelLayer) -> tuple[list[BaseException | None], int]:
    """Send to GROUPS groups at once, one member each; return the outcomes and frames received."""
    # Plain channel names: each is read straight from its own key.
    channels = [f"member{i}" for i in range(GROUPS)]
    for i, channel in enumerate(channels):
        await layer.group_add(f"g{i}", channel)
    outcomes = await asyncio.gather(
        *(layer.group_send(f"g{i}", {"type": "x", "n": i}) for i in range(GROUPS)), return_exceptions=True
    )
    received = 0
    for i, channel in enumerate(channels):
        if outcomes[i] is None:
            async with asyncio.timeout(5):
                assert (await layer.receive(channel))["n"] == i
            received += 1
    await layer.flush()
    await layer.close_pools()
    return outcomes, received


@async_test
async def test_a_burst_of_sends_beyond_the_pool_size_waits_and_every_one_arrives():
    outcomes, received = await _burst(_layer(BlockingPoolChannelLayer, max_connections=5))

    assert [o for o in outcomes if o is not None] == []
    assert received == GROUPS


@async_test
async def test_channels_redis_own_pool_fails_such_a_burst():
    # Why the layer exists: the stock pool raises instead of waiting (redis-py 6+ caps it).
    outcomes, received = await _burst(_layer(RedisChannelLayer, max_connections=5))

    failures = [o for o in outcomes if o is not None]
    assert failures and all(isinstance(o, RedisConnectionError) for o in failures)
    assert received == GROUPS - len(failures)
