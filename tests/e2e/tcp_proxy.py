"""A TCP proxy the tests put between the processes and PostgreSQL, to cut and restore the network.

`cut("refuse")` closes every proxied connection and stops listening, so new connections are
refused (a database host that is down); `cut("blackhole")` closes them too but keeps
accepting new ones and never answers (a network that drops packets: the client waits for its
own timeout). `cut("stall")` keeps every connection open but forwards nothing more, either way,
and drops every packet the clients send it, so their kernels see nothing acknowledged: what a
network that stops carrying packets does to connections in the middle of a query (a proxy
that merely stopped reading would not do: its kernel would still acknowledge the bytes). New
connections meet the same. `restore()` forwards again, on the same port (the connections cut,
blackholed or stalled are closed first). Threads, one pair per connection: the processes under
test hold a handful.
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import threading

REFUSE = "refuse"
BLACKHOLE = "blackhole"
STALL = "stall"

# A classic BPF socket filter of one instruction, `ret #0`: every packet arriving for the socket
# is dropped before TCP sees it, so none is acknowledged (Linux; no privilege needed).
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_DROP_ALL = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0
_DROP_ALL_PROGRAM = struct.pack("HL", 1, ctypes.addressof(_DROP_ALL))  # struct sock_fprog


def drop_every_packet(sock: socket.socket) -> None:
    """Make the kernel drop, unacknowledged, every packet that arrives for `sock`."""
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, _DROP_ALL_PROGRAM)


class TcpProxy:
    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0
        self.mode = "open"
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._clients: set[socket.socket] = set()  # the accepted ends (the processes' side)
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.accepted = 0

    # --- control ------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def cut(self, mode: str) -> None:
        """Refuse, blackhole or stall (see the module docstring)."""
        assert mode in (REFUSE, BLACKHOLE, STALL), mode
        with self._lock:
            self.mode = mode
            clients = list(self._clients)
        if mode == STALL:
            for client in clients:
                with contextlib.suppress(OSError):
                    drop_every_packet(client)
            return
        if mode == REFUSE:
            self._stop_listening()
        self._close_all()

    def restore(self) -> None:
        """Forward new connections again (those blackholed or stalled are closed first)."""
        refused = self.mode == REFUSE
        with self._lock:
            self.mode = "open"
        self._close_all()
        if refused:
            self._listen()

    def close(self) -> None:
        self._stop_listening()
        self._close_all()

    # --- internals ----------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept, args=(listener,), name="proxy-accept", daemon=True
        )
        self._acceptor.start()

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._acceptor is not None:
            self._acceptor.join(timeout=2)
            self._acceptor = None

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with self._lock:
                mode = self.mode
                self._sockets.add(client)
                self._clients.add(client)
            if mode == STALL:
                drop_every_packet(client)
            if mode in (BLACKHOLE, STALL):
                continue  # held open, never read, never answered
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            self._drop(client)
            return
        server.settimeout(None)
        with self._lock:
            if self.mode != "open" or client not in self._sockets:
                server.close()
                return
            self._sockets.add(server)
        threading.Thread(target=self._pipe, args=(client, server), daemon=True).start()
        threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.mode == STALL:
                    continue  # lost on the way
                target.sendall(data)
        except OSError:
            pass
        self._drop(source)
        self._drop(target)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
            self._clients.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def _close_all(self) -> None:
        with self._lock:
            doomed = list(self._sockets)
        for sock in doomed:
            self._drop(sock)
