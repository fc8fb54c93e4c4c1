"""Group commit for receipts: the `ack` and `read` frames of all sockets of a process.

One transaction per ack frame caps a process at a few hundred acks a second. Instead, while one
batch is being applied, the receipts that arrive meanwhile wait and then go together in the
next one: at low load a receipt is applied at once, at high load hundreds share a transaction.
Each socket still waits for its own receipt to be applied before it reads its next frame, so a
client that sends an ack and then a ping gets its pong only after the ack is recorded.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field

from channels.db import database_sync_to_async

from apps.messaging.services import Receipt, receipts_apply


@dataclass
class _Batcher:
    waiting: list[tuple[Receipt, asyncio.Future]] = field(default_factory=list)
    flushing: bool = False
    # The running flush: a task nobody references may be garbage-collected mid-flight.
    task: asyncio.Task | None = None

    async def apply(self, receipt: Receipt) -> None:
        done = asyncio.get_running_loop().create_future()
        self.waiting.append((receipt, done))
        if not self.flushing:
            self.flushing = True
            self.task = asyncio.ensure_future(self._flush())
        await done

    async def _flush(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    await _apply([receipt for receipt, _ in batch])
                except Exception as exc:  # noqa: BLE001 - handed to every waiting socket
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self.flushing = False


# In the thread pool, like the consumers' other database work.
_apply = database_sync_to_async(receipts_apply, thread_sensitive=False)
_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = weakref.WeakKeyDictionary()


async def receipt_apply(receipt: Receipt) -> None:
    """Apply `receipt` together with the other receipts of this process arriving meanwhile."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _Batcher()
    await batcher.apply(receipt)
