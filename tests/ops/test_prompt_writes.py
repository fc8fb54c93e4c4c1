"""messaging_project.prompt_writes under Twisted's real asyncio reactor, in a process of its own.

Each scenario runs in a fresh Python (a reactor is installed once per process), serves TCP on
loopback with the patch installed and reports what the peer received and how often the reactor
was asked to watch for writability.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import twisted
from twisted.internet import abstract, tcp

from messaging_project import prompt_writes

SCENARIO = textwrap.dedent(
    """
    import asyncio, json, socket, sys, threading, time
    from twisted.internet import asyncioreactor
    loop = asyncio.new_event_loop()
    asyncioreactor.install(loop)
    from twisted.internet import protocol, reactor
    from messaging_project import prompt_writes

    mode, writes, size, reader_delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    installed = prompt_writes.install() if mode == "patched" else False
    watched = []
    original_add_writer = reactor.addWriter
    def add_writer(writer):
        watched.append(1)
        return original_add_writer(writer)
    reactor.addWriter = add_writer

    class Writer(protocol.Protocol):
        def connectionMade(self):
            # One burst in one turn of the loop, then close once it is all out.
            for i in range(writes):
                self.transport.write(bytes([65 + i % 26]) * size)
            self.transport.loseConnection()

    factory = protocol.Factory.forProtocol(Writer)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    received = bytearray()
    def client():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        s.connect(("127.0.0.1", port.getHost().port))
        time.sleep(reader_delay)  # a reader that lets the server's buffers fill first
        while chunk := s.recv(65536):
            received.extend(chunk)
        s.close()
        reactor.callFromThread(reactor.stop)
    threading.Thread(target=client, daemon=True).start()
    reactor.callLater(30, reactor.stop)
    reactor.run()
    expected = b"".join(bytes([65 + i % 26]) * size for i in range(writes))
    print(json.dumps({"installed": installed, "intact": bytes(received) == expected,
                      "received": len(received), "watched": len(watched)}))
    """
)


def run_scenario(mode: str, *, writes: int, size: int, reader_delay: float = 0.0) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCENARIO, mode, str(writes), str(size), str(reader_delay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_patch_targets_the_installed_twisted_and_its_internals():
    # Re-read tcp.Connection/FileDescriptor writes and AsyncioSelectorReactor._readOrWrite
    # before widening TWISTED_TESTED.
    assert twisted.__version__.startswith(prompt_writes.TWISTED_TESTED), twisted.__version__
    # What the patch replaces is Twisted's own (whether or not this process installed it).
    original = getattr(tcp.Connection, "_twisted_start_writing", tcp.Connection.startWriting)
    assert original is abstract.FileDescriptor.startWriting
    for name in ("dataBuffer", "offset", "_tempDataLen", "_tempDataBuffer"):
        assert name in abstract.FileDescriptor.doWrite.__code__.co_names, name


def test_installing_outside_daphne_neither_patches_nor_installs_a_reactor():
    code = (
        "import sys; from messaging_project import prompt_writes; from twisted.internet import tcp\n"
        "print(prompt_writes.install(), 'twisted.internet.reactor' in sys.modules,"
        " tcp.Connection.startWriting is prompt_writes._start_writing)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_a_burst_that_fits_leaves_without_watching_for_writability():
    patched = run_scenario("patched", writes=50, size=400)
    assert patched == {"installed": True, "intact": True, "received": 20_000, "watched": 0}
    unpatched = run_scenario("unpatched", writes=50, size=400)
    assert unpatched["intact"] and unpatched["watched"] >= 1  # what the patch saves


@pytest.mark.parametrize("reader_delay", [0.0, 0.5])
def test_more_than_the_kernel_buffers_hold_arrives_whole_and_in_order_then_closes(reader_delay):
    # 16 MB written at once to a small receive buffer: the flush finds the kernel's buffer full,
    # the reactor watches for writability and Twisted's own path writes the rest, then closes.
    result = run_scenario("patched", writes=256, size=64 * 1024, reader_delay=reader_delay)
    assert result["installed"] and result["intact"], result
    assert result["received"] == 256 * 64 * 1024
    assert result["watched"] >= 1
