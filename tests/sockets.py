"""A stand-in for an open WebSocket in tests that drive delivery without the consumer.

`socket_open` makes a channel of the channel layer, joins it to a user's group and records a
heartbeat, as a consumer's connect does; a task on this process's channel-layer loop (the one
`apps.common.bridge` sends from) reads the channel into a queue for `socket_receive`. The
channel stays subscribed between reads, so no event is missed while a test looks elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import queue

from channels.layers import get_channel_layer

from apps.accounts import presence
from apps.accounts.models import PartyKind
from apps.accounts.party import Party
from apps.common import bridge

_inboxes: dict[str, queue.Queue] = {}
_readers: list[asyncio.Task] = []


def socket_open(user_id: int, kind: str = PartyKind.MOBILE) -> str:
    """Open a simulated connection of the user; return its channel name."""
    layer = get_channel_layer()
    inbox: queue.Queue = queue.Queue()

    async def join() -> str:
        channel = await layer.new_channel("test-socket.")
        await layer.group_add(Party(kind, user_id).group, channel)

        async def read() -> None:
            while True:
                inbox.put(await layer.receive(channel))

        _readers.append(asyncio.ensure_future(read()))
        return channel

    channel = bridge.run(join())
    _inboxes[channel] = inbox
    presence.connection_seen(party=Party(kind, user_id), channel_name=channel)
    return channel


def socket_receive(channel: str, timeout: float = 2.0) -> dict | None:
    """Return the next event sent to the connection, or None if none arrives within `timeout`."""
    try:
        return _inboxes[channel].get(timeout=timeout)
    except queue.Empty:
        return None


def sockets_close() -> None:
    """Stop reading every simulated connection (after each test)."""

    async def cancel(tasks: list[asyncio.Task]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    if _readers:
        bridge.run(cancel(list(_readers)))
    _readers.clear()
    _inboxes.clear()


def event_payloads(event: dict) -> list[dict]:
    """Return the M objects of a `deliver.messages` event (each frame travels encoded)."""
    assert event["type"] == "deliver.messages"
    return [json.loads(m["frame"])["message"] for m in event["messages"]]
