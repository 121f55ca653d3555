"""A TCP proxy on 127.0.0.1 whose behaviour can be switched while it runs.

- ``pass``: bytes flow both ways.
- ``cut``: every open connection is reset and new ones are closed at once, as when a
  server crashes or a firewall rejects.
- ``hang``: connections stay open (new ones are accepted) but no byte is forwarded
  either way, as when a server or the network stops answering while the kernel still
  acknowledges packets. Switching back to ``pass`` lets the held bytes through.

Threads only: one accept loop and two pumps per connection, all daemons, all stopped
by `TCPProxy.stop`. Every blocking call has a short timeout, so a mode change takes
effect within about 50 ms.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

__all__ = ["Mode", "TCPProxy", "tcp_proxy"]

Mode = Literal["pass", "cut", "hang"]
_POLL = 0.05


class TCPProxy:
    def __init__(self, target_port: int, *, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(256)
        self._listener.settimeout(_POLL)
        self.port = int(self._listener.getsockname()[1])
        self._mode: Mode = "pass"
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.connections = 0  # accepted in total

    @property
    def mode(self) -> Mode:
        return self._mode

    def set_mode(self, mode: Mode) -> None:
        with self._lock:
            self._mode = mode
            pairs = list(self._pairs) if mode == "cut" else []
            if mode == "cut":
                self._pairs.clear()
        for pair in pairs:
            for sock in pair:
                _reset(sock)

    def start(self) -> None:
        self._spawn(self._accept_loop, "proxy-accept")

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            pairs, self._pairs = list(self._pairs), []
        for pair in pairs:
            for sock in pair:
                _reset(sock)
        for thread in list(self._threads):
            thread.join(timeout=2)
        self._listener.close()

    def _spawn(self, target: object, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            if self._mode == "cut":
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=2)
            except OSError:
                _reset(client)
                continue
            for sock in (client, upstream):
                # Blocking, so a send never gives up half-way on a busy machine; the
                # pumps wait for data with select() and a short timeout instead.
                sock.settimeout(None)
            with self._lock:
                self._pairs.append((client, upstream))
            self._spawn(self._pump, "proxy-up", client, upstream)
            self._spawn(self._pump, "proxy-down", upstream, client)
            # Forget finished threads so a long run does not accumulate them.
            self._threads = [t for t in self._threads if t.is_alive()]

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while not self._stopping.is_set():
            if self._mode == "hang":
                self._stopping.wait(_POLL)
                continue
            try:
                readable, _, _ = select.select([source], [], [], _POLL)
                if not readable:
                    continue
                data = source.recv(65536)
            except (OSError, ValueError):  # closed by a cut, or by the other pump
                break
            if not data:
                break
            # Bytes read just before a switch to hang are held, not forwarded.
            while self._mode == "hang" and not self._stopping.is_set():
                self._stopping.wait(_POLL)
            try:
                sink.sendall(data)
            except OSError:
                break
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()  # the other pump's next recv fails and ends it too
        with self._lock:
            self._pairs = [p for p in self._pairs if source not in p]


def _reset(sock: socket.socket) -> None:
    # SO_LINGER 0: close() sends RST, as a crashed peer's kernel would.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


@contextmanager
def tcp_proxy(target_port: int) -> Iterator[TCPProxy]:
    """A proxy to 127.0.0.1:*target_port* in ``pass`` mode; stopped when the block ends."""
    proxy = TCPProxy(target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
