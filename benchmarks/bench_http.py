"""Per-call cost of backend_kit.http and of a circuit breaker on the closed path.

Compares, in one run and against a keep-alive HTTP server on loopback (its own
process, so it does not share the client's interpreter):

- ``backend_kit.http.client()`` against a plain ``httpx.Client`` (target <= 1.10x);
- ``backend_kit.http.session()`` against a plain ``requests.Session`` (target <= 1.10x);
- a breaker's closed-path check (``with breaker:``) in process (target <= 1 us), and
  the shared (Redis) breaker's closed path with its local copy fresh (no round trip)
  and with ``sync_interval=0`` (one round trip per call), for information.

backend_kit's side logs its one ``http_request`` event per call (JSON, to a null
stream), so the figure includes what a service really pays. Rounds of both sides
alternate and the median of the per-round ratios counts, which keeps a noisy machine
from favouring either side.

For httpx, two more figures in the same run, for information, say where the target
sits: the **floor**, a plain client whose transport adds only the same two headers
(``X-Request-ID`` and a ``traceparent`` with a new span id) and writes the same
``http_request`` line with ``orjson.dumps`` and one write and flush (no redaction,
breaker, budget, retry decision or level check); and backend_kit with the event
filtered out (``LOG_LEVEL=WARNING``), what a service pays that logs warnings only.

Run: ``python benchmarks/bench_http.py`` (``--calls``, ``--rounds`` to tune,
``--redis-url`` for the shared breaker, ``--json PATH`` for JSON records). Exits
non-zero when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import textwrap
import time
import timeit
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TextIO

import httpx
import orjson
import requests
from _report import Results, add_json_option

import backend_kit
from backend_kit import http

RATIO_TARGET = 1.10
BREAKER_TARGET_NS = 1000.0
results = Results("bench_http")

# A keep-alive server that answers every request with the same bytes: it reads up to
# the blank line and does no header parsing, so its own cost stays out of the figures
# (the Python standard library's server parses each header with the email package).
_SERVER = """
import socket, threading

BODY = b'{"rates": {"EUR": 0.92}}'
ANSWER = (
    b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
    b"Content-Length: " + str(len(BODY)).encode() + b"\\r\\n\\r\\n" + BODY
)

def serve(connection):
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pending = b""
    with connection:
        while True:
            data = connection.recv(65536)
            if not data:
                return
            pending += data
            while b"\\r\\n\\r\\n" in pending:
                _, pending = pending.split(b"\\r\\n\\r\\n", 1)
                connection.sendall(ANSWER)

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(listener.getsockname()[1], flush=True)
while True:
    connection, _ = listener.accept()
    threading.Thread(target=serve, args=(connection,), daemon=True).start()
"""


def start_server() -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_SERVER)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    port = process.stdout.readline().strip()
    return process, f"http://127.0.0.1:{port}/rates"


def alternate(
    ours: Callable[[], object], theirs: Callable[[], object], calls: int, rounds: int
) -> tuple[float, float, float]:
    """Per-call seconds of each side (best round) and the median of the per-round
    ratios: rounds alternate which side goes first, so a neighbour's burst of load
    lands on both sides of a round and cancels out of its ratio."""
    best_ours = best_theirs = float("inf")
    ratios = []
    for number in range(rounds):
        if number % 2:
            mine = timeit.timeit(ours, number=calls) / calls
            plain = timeit.timeit(theirs, number=calls) / calls
        else:
            plain = timeit.timeit(theirs, number=calls) / calls
            mine = timeit.timeit(ours, number=calls) / calls
        best_ours, best_theirs = min(best_ours, mine), min(best_theirs, plain)
        ratios.append(mine / plain)
    return best_ours, best_theirs, statistics.median(ratios)


def compare(title: str, short: str, ours: float, theirs: float, ratio: float) -> bool:
    verdict = "OK" if ratio <= RATIO_TARGET else "ABOVE TARGET"
    print(f"\n{title}")
    print(f"  plain        {theirs * 1e6:8.1f} us/call")
    print(f"  backend_kit  {ours * 1e6:8.1f} us/call")
    print(f"  median of per-round ratios {ratio:.3f} (target <= {RATIO_TARGET}): {verdict}")
    results.absolute(f"{short}: plain", theirs * 1e6, "us/call", better="lower")
    results.absolute(f"{short}: backend_kit", ours * 1e6, "us/call", better="lower")
    results.ratio(f"{short}: backend_kit / plain", ratio, target=RATIO_TARGET, better="lower")
    return ratio <= RATIO_TARGET


class FloorTransport(httpx.BaseTransport):
    """The floor: what propagating the context and logging the call cost at the least.
    The same two headers and the same ``http_request`` line as backend_kit's client,
    built with nothing but an f-string and ``orjson.dumps``, one write and flush."""

    def __init__(self, stream: TextIO) -> None:
        self._inner = httpx.HTTPTransport()
        self._stream = stream

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        trace = backend_kit.current_trace()
        assert trace is not None
        request_id = backend_kit.current_request_id() or ""
        span_id = f"{random.getrandbits(64):016x}"
        request.headers["traceparent"] = f"00-{trace.trace_id}-{span_id}-{trace.flags}"
        request.headers["X-Request-ID"] = request_id
        response = self._inner.handle_request(request)
        line = {
            "timestamp": datetime.now(timezone.utc),
            "level": "info",
            "event": "http_request",
            "logger": "backend_kit.http",
            "service": "bench",
            "environment": "production",
            "method": request.method,
            "url": str(request.url),
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
            "attempts": 1,
            "request_id": request_id,
            "trace_id": trace.trace_id,
            "span_id": trace.span_id,
        }
        self._stream.write(orjson.dumps(line).decode() + "\n")
        self._stream.flush()
        return response

    def close(self) -> None:
        self._inner.close()


def bench_httpx(url: str, calls: int, rounds: int, null_stream: TextIO) -> bool:
    with (
        http.client() as ours,
        httpx.Client() as theirs,
        httpx.Client(transport=FloorTransport(null_stream)) as floor,
        backend_kit.request_context("bench"),
    ):
        for each in (ours, theirs, floor):
            each.get(url)
        mine, plain, ratio = alternate(
            lambda: ours.get(url).content, lambda: theirs.get(url).content, calls, rounds
        )
        least, _, floor_ratio = alternate(
            lambda: floor.get(url).content, lambda: theirs.get(url).content, calls, rounds
        )
        configure(null_stream, level="WARNING")
        try:
            quiet, _, quiet_ratio = alternate(
                lambda: ours.get(url).content, lambda: theirs.get(url).content, calls, rounds
            )
        finally:
            configure(null_stream)
    met = compare("httpx: a successful GET on loopback", "httpx", mine, plain, ratio)
    margin = RATIO_TARGET - floor_ratio
    room = (
        f"the target leaves {margin * 100:.1f}% of a plain call for the rest"
        if margin > 0
        else "the floor alone is at or above the target"
    )
    print(
        f"  floor (same headers and line, orjson alone) {least * 1e6:6.1f} us/call, "
        f"median ratio {floor_ratio:.3f}: {room}"
    )
    print(
        f"  backend_kit, event filtered (LOG_LEVEL=WARNING) {quiet * 1e6:6.1f} us/call, "
        f"median ratio {quiet_ratio:.3f}"
    )
    results.ratio("httpx: floor (same headers and line) / plain", floor_ratio, better="lower")
    results.ratio("httpx: backend_kit, event filtered / plain", quiet_ratio, better="lower")
    return met


def bench_requests(url: str, calls: int, rounds: int) -> bool:
    ours, theirs = http.session(), requests.Session()
    ours.get(url)
    theirs.get(url)
    with backend_kit.request_context("bench"):
        mine, plain, ratio = alternate(
            lambda: ours.get(url).content,
            lambda: theirs.get(url, timeout=(3.0, 10.0)).content,
            calls,
            rounds,
        )
    ours.close()
    theirs.close()
    return compare("requests: a successful GET on loopback", "requests", mine, plain, ratio)


def block_cost(breaker: backend_kit.CircuitBreaker, number: int, repeat: int) -> float:
    def guarded() -> None:
        with breaker:
            pass

    def bare() -> None:
        pass

    best = min(timeit.repeat(guarded, number=number, repeat=repeat)) / number
    baseline = min(timeit.repeat(bare, number=number, repeat=repeat)) / number
    return (best - baseline) * 1e9


def bench_breaker(redis_url: str | None) -> bool:
    in_process = backend_kit.circuit_breaker(f"bench-{uuid.uuid4().hex}")
    cost = block_cost(in_process, 200_000, 5)
    ok = cost <= BREAKER_TARGET_NS
    print("\ncircuit breaker, closed path (`with breaker:` around nothing, minus a bare call)")
    print(
        f"  in process             {cost:8.0f} ns/call  (target <= {BREAKER_TARGET_NS:.0f}): "
        f"{'OK' if ok else 'ABOVE TARGET'}"
    )
    results.absolute(
        "breaker closed path, in process",
        cost,
        "ns/call",
        target=BREAKER_TARGET_NS,
        better="lower",
    )
    if redis_url is None:
        return ok
    name = f"bench-{uuid.uuid4().hex}"
    cached = backend_kit.circuit_breaker(name, redis_url=redis_url, sync_interval=0.5)
    cached_cost = block_cost(cached, 100_000, 5)
    print(f"  Redis, local copy fresh {cached_cost:7.0f} ns/call  (no round trip)")
    results.absolute(
        "breaker closed path, Redis, copy fresh", cached_cost, "ns/call", better="lower"
    )
    every_call = backend_kit.circuit_breaker(name, redis_url=redis_url, sync_interval=0.0)
    round_trip = block_cost(every_call, 500, 3)
    print(f"  Redis, sync_interval=0  {round_trip:7.0f} ns/call  (one round trip per call)")
    results.absolute(
        "breaker closed path, Redis, every call", round_trip, "ns/call", better="lower"
    )
    every_call.reset()
    return ok


def configure(stream: TextIO, level: str = "INFO") -> None:
    backend_kit.configure_logging(
        backend_kit.load_settings(service_name="bench", environment="production"),
        format="json",
        level=level,
        stream=stream,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the shared breaker")
    add_json_option(parser)
    args = parser.parse_args()
    # The http_request events are rendered and written, to a null stream.
    null_stream = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the run
    configure(null_stream)
    server, url = start_server()
    try:
        time.sleep(0.2)
        verdicts = [
            bench_httpx(url, args.calls, args.rounds, null_stream),
            bench_requests(url, args.calls, args.rounds),
            bench_breaker(None if args.no_redis else args.redis_url),
        ]
    finally:
        server.terminate()
        server.wait(timeout=10)
    results.write(args.json)
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
