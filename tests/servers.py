"""Throwaway servers on 127.0.0.1 for tests that must break a dependency on purpose.

The shared services (Redis on 6379, PostgreSQL on 5432) are never touched here: each
helper starts its own process or socket on a free port and stops it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = [
    "GunicornServer",
    "RedisServer",
    "free_port",
    "gunicorn_server",
    "redis_server",
    "silent_tcp_server",
    "wait_for_port",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 10.0) -> None:
    """Block until something accepts connections on 127.0.0.1:*port*."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on 127.0.0.1:{port} after {timeout} s"
                ) from None
            time.sleep(0.02)


class RedisServer:
    """A private ``redis-server`` that a test may stop and start again on the same port."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.skip("redis-server is not installed; it is needed to start a throwaway Redis")
        self._process = subprocess.Popen(
            [
                executable,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self._workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)

    def stop(self) -> None:
        """Kill the server at once, as a crash would (no graceful shutdown)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Start a throwaway Redis on a free loopback port; always stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="bk-redis-") as workdir:
        server = RedisServer(free_port(), Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def silent_tcp_server() -> Iterator[int]:
    """A loopback port that accepts connections and never sends a byte.

    Yields the port. Accepted sockets are held open until the block ends, so a client
    waits on its read timeout exactly as it would on a hung dependency.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept_forever() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept_forever, name="silent-tcp-server", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stopping.set()
        thread.join(timeout=5)
        listener.close()
        for conn in held:
            conn.close()


class GunicornServer:
    """A gunicorn process serving a WSGI app on a free loopback port.

    Its standard output and error are collected in a file so a test can read the log
    lines the service printed.
    """

    def __init__(
        self,
        app: str,
        *,
        cwd: Path,
        env: dict[str, str],
        log_path: Path,
        workers: int = 1,
        options: Sequence[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        if options is None:
            options = ["--workers", str(workers), "--threads", "4", "--graceful-timeout", "5"]
        self._command = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{self.port}",
            *options,
            app,
        ]  # fmt: skip
        self._cwd = cwd
        self._env = env
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command, cwd=self._cwd, env=self._env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_for_port(self.port, timeout=30)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"gunicorn did not start:\n{self.output()}") from None

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            self._process = None

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The master process, for a test that signals it or waits for its exit."""
        assert self._process is not None, "gunicorn is not running"
        return self._process


@contextmanager
def gunicorn_server(
    app: str,
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    workers: int = 1,
    options: Sequence[str] | None = None,
) -> Iterator[GunicornServer]:
    """Serve *app* (``module:attribute``) under gunicorn on 127.0.0.1; stopped afterwards.

    *options* replace the default command-line options (*workers* and four threads);
    the address is always a free loopback port.
    """
    server = GunicornServer(
        app, cwd=cwd, env=env, log_path=log_path, workers=workers, options=options
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
