"""Socket writes of the web process: sent at the next turn of the event loop, not after an epoll round.

Twisted's TCP transport never writes in `write()`: it buffers the bytes and registers the socket
for writability (`startWriting` → `reactor.addWriter`), writes when epoll reports the socket
writable, then unregisters it (`stopWriting` → `removeWriter`). On the asyncio reactor each of
those is an `epoll_ctl` and asyncio handle bookkeeping, plus a poll round in between. A delivery
round writes a frame to each of hundreds of sockets, so that came to about 11 % of a web
process's CPU while batches were delivered (py-spy, `addWriter` alone).

Here `startWriting` schedules one flush of the connection with `call_soon` instead: whatever is
written during this turn of the loop leaves together in one `send()` at the start of the next
turn (Twisted coalesced the same writes into one send after the poll), and the socket is
registered for writability only when the kernel's buffer is full (a slow reader), where
Twisted's own path takes over. The flush is the reactor's own `_readOrWrite(conn, False)`, what
the poll would have called: `doWrite`, then the disconnect handling of its answer (a
`loseConnection` after the last bytes, a write error).

This replaces `twisted.internet.tcp.Connection.startWriting` and uses the asyncio reactor's
`_readOrWrite` and `_writers`: `TWISTED_TESTED` names the versions it was written against,
`install` does nothing on others, and tests/ops/test_patches.py fails when the installed Twisted
is not one of them.
"""

from __future__ import annotations

import logging
import sys

import twisted

logger = logging.getLogger(__name__)

# The Twisted versions whose tcp.Connection / AsyncioSelectorReactor internals this relies on.
TWISTED_TESTED = ("26.10.",)


def twisted_is_tested() -> bool:
    return twisted.__version__.startswith(TWISTED_TESTED)


def install() -> bool:
    """Make this process's TCP connections flush writes on the next loop turn; return whether it did.

    Only under Twisted's asyncio reactor (daphne's) and a tested Twisted; idempotent. Never
    installs a reactor itself (outside daphne, e.g. under pytest, it does nothing).
    """
    if "twisted.internet.reactor" not in sys.modules:
        return False
    from twisted.internet import reactor, tcp
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        return False
    if not twisted_is_tested():
        logger.warning("prompt_writes.untested_twisted", extra={"version": twisted.__version__})
        return False
    if tcp.Connection.startWriting is not _start_writing:
        tcp.Connection._twisted_start_writing = tcp.Connection.startWriting
        tcp.Connection._flush_scheduled = False
        tcp.Connection.startWriting = _start_writing
    return True


def _start_writing(conn) -> None:
    reactor = conn.reactor
    if conn._flush_scheduled or conn in reactor._writers or conn in reactor._continuousPolling._writers:
        return  # a flush is coming, or the reactor already waits for writability
    conn._flush_scheduled = True
    reactor._asyncioEventloop.call_soon(_flush, conn)


def _flush(conn) -> None:
    conn._flush_scheduled = False
    if not conn.connected:
        return  # lost meanwhile: connectionLost has done the cleanup
    conn.reactor._readOrWrite(conn, False)
    if conn.connected and (conn.offset < len(conn.dataBuffer) or conn._tempDataLen):
        # The kernel's buffer is full: wait for writability as Twisted does.
        conn._twisted_start_writing()
