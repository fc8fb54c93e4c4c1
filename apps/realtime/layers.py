"""The channel layer: channels-redis with a connection pool that waits instead of failing.

redis-py 6 and later cap a connection pool at 100 connections and raise MaxConnectionsError
for the 101st concurrent command. A delivery round sends to hundreds of groups at once
(`bridge.group_send_many`) and a web process with thousands of sockets joins and leaves groups
in bursts, so a plain pool fails sends that only needed to wait a millisecond, and every failure
counts against the channel layer's circuit breaker. A blocking pool queues them instead.
"""

from __future__ import annotations

from channels_redis.core import RedisChannelLayer
from redis.asyncio import BlockingConnectionPool

# Commands waiting this long for a free connection fail (as a real outage would).
POOL_TIMEOUT_SECONDS = 5


class BlockingPoolChannelLayer(RedisChannelLayer):
    """A RedisChannelLayer whose hosts given by URL get a BlockingConnectionPool.

    `max_connections` in a host's settings sizes the pool (default 100); other host forms
    (sentinels, host/port) keep channels-redis' own pool.
    """

    def create_pool(self, index: int):
        host = dict(self.hosts[index])
        address = host.pop("address", None)
        if address is None:
            return super().create_pool(index)
        host.setdefault("max_connections", 100)
        host.setdefault("timeout", POOL_TIMEOUT_SECONDS)
        return BlockingConnectionPool.from_url(address, **host)
