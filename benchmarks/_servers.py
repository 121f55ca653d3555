"""Loopback servers the benchmarks measure against, and the load that drives them.

- `silent_tcp_port`: a dependency that accepts and never answers.
- `gunicorn`: an app of ``benchmarks/apps/`` served by gunicorn until the block ends.
- `wrk`: one ``wrk`` run against a port, in requests per second.
- `interleaved_rates`: several servers loaded in turn, round after round, so that a
  busy moment of a shared machine falls on every server alike; `interleaved_runs`
  also reads the CPU time the servers' workers spent on each request.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
HOST = "127.0.0.1"  # loopback only


@contextlib.contextmanager
def silent_tcp_port() -> Iterator[int]:
    """A loopback port that accepts connections and never sends a byte: a hung
    dependency. Accepted connections stay open until the block ends."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(64)
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        thread.join(5)
        listener.close()
        for conn in held:
            conn.close()


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Reply(NamedTuple):
    status: int
    headers: http.client.HTTPMessage
    body: bytes


def get(
    port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 5
) -> Reply:
    """``GET path`` on a new connection to the loopback *port*, read to the end."""
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers=dict(headers or {}))
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


@contextlib.contextmanager
def gunicorn(
    app: str,
    port: int,
    errors: str,
    *,
    workers: int = 1,
    threads: int = 2,
    config: str | None = None,
    env: Mapping[str, str] | None = None,
    ready_path: str = "/hello",
) -> Iterator[int]:
    """Serve *app* (a gunicorn app spec relative to ``benchmarks/``) on *port* until the
    block exits, which gets the master's pid: *workers* ``gthread`` workers of *threads*
    threads, keep-alive, no access log, stdout to ``/dev/null``, stderr to the file
    *errors*; ``-c config`` when given, the environment *env* (else this process's).
    Ready once *ready_path* answers 200; `RuntimeError` with gunicorn's stderr when it
    does not within 30 s."""
    command = [sys.executable, "-m", "gunicorn"]
    if config is not None:
        command += ["-c", config]
    command += [
        "--bind", f"{HOST}:{port}",
        "--workers", str(workers), "--worker-class", "gthread", "--threads", str(threads),
        "--keep-alive", "30", "--log-level", "warning",
        "--pythonpath", BENCHMARKS,
        app,
    ]  # fmt: skip
    with open(os.devnull, "w") as stdout, open(errors, "w") as stderr:
        process = subprocess.Popen(
            command, stdout=stdout, stderr=stderr, env=dict(env) if env is not None else None
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(port, ready_path, timeout=2).status == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                with open(errors) as log:
                    raise RuntimeError(f"gunicorn {app} did not start:\n{log.read()}")
            time.sleep(0.1)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Run(NamedTuple):
    """One ``wrk`` run against one server."""

    rate: float
    """Requests per second."""
    cpu_us: float | None
    """CPU time (user and system) the server's workers spent per request, in µs; None
    where it cannot be read (no ``/proc``)."""


def _wrk(port: int, duration: float, connections: int, path: str) -> tuple[int, float]:
    if duration != int(duration) or duration < 1:
        raise ValueError(f"wrk runs for whole seconds, not {duration:g}")
    result = subprocess.run(
        [
            "wrk",
            "--threads", "1",
            "--connections", str(connections),
            "--duration", f"{duration:g}s",
            "--timeout", "5s",
            f"http://{HOST}:{port}{path}",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    )  # fmt: skip
    if "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        raise RuntimeError(f"wrk saw errors:\n{result.stdout}")
    count = re.search(r"(\d+) requests in", result.stdout)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if count is None or rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{result.stdout}")
    return int(count.group(1)), float(rate.group(1))


def wrk(port: int, duration: float, connections: int, path: str = "/hello") -> float:
    """Requests per second of one ``wrk`` run (one thread, *connections* keep-alive
    connections, *duration* seconds) against *path*; `RuntimeError` when wrk saw a
    non-2xx answer or a socket error."""
    return _wrk(port, duration, connections, path)[1]


def workers_cpu_seconds(master: int) -> float | None:
    """User and system CPU time of the gunicorn *master*'s live workers, in seconds;
    None without Linux's ``/proc``."""
    try:
        with open(f"/proc/{master}/task/{master}/children") as file:
            workers = [int(pid) for pid in file.read().split()]
        total = 0
        for pid in workers:
            with open(f"/proc/{pid}/stat") as file:
                # Fields after the command name (which may hold spaces): utime is the
                # 12th, stime the 13th.
                fields = file.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
    except OSError:
        return None
    return total / os.sysconf("SC_CLK_TCK")


def interleaved_runs(
    servers: Mapping[str, tuple[int, int]],
    *,
    rounds: int,
    duration: float,
    connections: int,
    warm_up: float = 1.0,
    alternate: bool = False,
) -> dict[str, list[Run]]:
    """Each server of *servers* (name to port and gunicorn master pid) loaded by one
    ``wrk`` run per round, *rounds* rounds, after one *warm_up* run each. With
    *alternate*, every other round runs the servers in reverse order (A B, B A, ...),
    so a slow drift of the machine's load favours neither.

    A run's CPU time per request counts only the workers' own CPU, which other
    processes on a busy machine delay but do not add to; the requests per second
    count every pause."""
    for port, _ in servers.values():
        wrk(port, warm_up, connections)
    runs: dict[str, list[Run]] = {name: [] for name in servers}
    order: Sequence[str] = list(servers)
    for number in range(rounds):
        for name in reversed(order) if alternate and number % 2 else order:
            port, master = servers[name]
            cpu_before = workers_cpu_seconds(master)
            requests, rate = _wrk(port, duration, connections, "/hello")
            cpu_after = workers_cpu_seconds(master)
            cpu_us = None
            if cpu_before is not None and cpu_after is not None and requests:
                cpu_us = (cpu_after - cpu_before) / requests * 1e6
            runs[name].append(Run(rate, cpu_us))
    return runs


def interleaved_rates(
    ports: Mapping[str, int],
    *,
    rounds: int,
    duration: float,
    connections: int,
    warm_up: float = 1.0,
) -> dict[str, list[float]]:
    """The requests per second of each server of *ports* (name to port) in each of
    *rounds* rounds of ``wrk`` runs, one run per server per round, in the same order
    every round, after one *warm_up* run each."""
    for port in ports.values():
        wrk(port, warm_up, connections)
    rates: dict[str, list[float]] = {name: [] for name in ports}
    for _ in range(rounds):
        for name, port in ports.items():
            rates[name].append(wrk(port, duration, connections))
    return rates
