"""The cost of backend_kit's metrics: the same app with metrics on and off, side by side.

    python benchmarks/bench_metrics.py [--requests 3000] [--repeat 7] [--duration 3]
                                       [--scrapes 30] [--json PATH]

1. **Test client.** ``GET /hello`` of ``benchmarks/apps/metrics_app.py`` through Flask's
   test client, with ``METRICS_ENABLED`` off and on (request logging at info to
   ``/dev/null`` in both); each figure is the best of ``--repeat`` rounds of
   ``--requests`` requests, the rounds interleaved. Target: on keeps >= 95% of off.
2. **gunicorn.** The same app under ``gunicorn -c python:backend_kit.gunicorn`` (one
   gthread worker, 2 threads, keep-alive), metrics off and on (on means
   prometheus_client's multiprocess mode, as in production), loaded by ``wrk`` (one
   thread, 4 connections) for ``--duration`` seconds per round, rounds interleaved,
   best of ``--repeat``. Target: on keeps >= 95% of off. Needs ``wrk``.
3. **Scrape.** Four workers, every route requested, so the workers' files hold at
   least 200 series; the median time of ``--scrapes`` scrapes of ``/metrics`` (a new
   connection each, as Prometheus does). Target: under 50 ms.

Exits with status 1 when a target is missed (2 when wrk is missing).
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import Results, add_json_option
from apps.metrics_app import EXTRA_ROUTES, bench_settings, create_app
from flask.testing import FlaskClient

import backend_kit
from backend_kit import configure_logging

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
THROUGHPUT_TARGET = 0.95
SCRAPE_TARGET_MS = 50.0
MIN_SERIES = 200
HOST = "127.0.0.1"  # loopback only
TOKEN = "bench-scrape-token"


# --- 1. test client -----------------------------------------------------------------


def requests_per_second(client: FlaskClient, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        client.get("/hello").close()
    return count / (time.perf_counter() - started)


def bench_test_client(args: argparse.Namespace, results: Results) -> float:
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    apps = {"off": create_app(metrics=False), "on": create_app(metrics=True)}
    clients = {variant: app.test_client() for variant, app in apps.items()}

    def activate(variant: str) -> None:
        # Metrics are process-wide: configure() turns them on or off for the round.
        backend_kit.configure(bench_settings(variant == "on"))
        configure_logging(stream=devnull)

    best = dict.fromkeys(clients, 0.0)
    for variant, client in clients.items():
        activate(variant)
        requests_per_second(client, 300)  # warm up
    for _ in range(args.repeat):
        for variant, client in clients.items():
            activate(variant)
            best[variant] = max(best[variant], requests_per_second(client, args.requests))
    activate("on")
    scrape = clients["on"].get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    if b'route="/hello"' not in scrape.data:
        raise RuntimeError("metrics on, yet /hello was not counted")
    print(f"\ntest client, best of {args.repeat} rounds x {args.requests} requests:")
    for variant, rate in best.items():
        print(f"  {rate:10.0f} req/s  metrics {variant}")
        results.absolute(f"test client, metrics {variant}", rate, "req/s", better="higher")
    ratio = best["on"] / best["off"]
    verdict = "ok" if ratio >= THROUGHPUT_TARGET else "MISSED"
    print(f"  ratio on / off: {ratio:.3f}  (>= {THROUGHPUT_TARGET:.2f})  {verdict}")
    added = 1e6 / best["on"] - 1e6 / best["off"]
    print(f"  (info) time the metrics add to a request: {added:.1f} µs")
    return results.ratio(
        "test client: metrics on / off", ratio, target=THROUGHPUT_TARGET, better="higher"
    )


# --- 2. and 3. gunicorn -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@contextmanager
def gunicorn(port: int, metrics: bool, workers: int, errors: str) -> Iterator[None]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("METRICS_", "PROMETHEUS_", "LOG_", "SENTRY_"))
    }
    env.update(
        METRICS_ENABLED="true" if metrics else "false",
        METRICS_TOKEN=TOKEN,
        SERVICE_NAME=f"bench-metrics-{'on' if metrics else 'off'}",
        ENVIRONMENT="production",
    )
    command = [
        sys.executable, "-m", "gunicorn",
        "-c", "python:backend_kit.gunicorn",
        "--bind", f"{HOST}:{port}",
        "--workers", str(workers), "--worker-class", "gthread", "--threads", "2",
        "--keep-alive", "30", "--log-level", "warning",
        "--pythonpath", BENCHMARKS,
        "apps.metrics_app:create_app()",
    ]  # fmt: skip
    with open(os.devnull, "w") as stdout, open(errors, "w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if get(port, "/hello")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                with open(errors) as log:
                    raise RuntimeError(f"gunicorn did not start:\n{log.read()}")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wrk(port: int, duration: float) -> float:
    result = subprocess.run(
        [
            "wrk",
            "--threads",
            "1",
            "--connections",
            "4",
            "--duration",
            f"{duration:g}s",
            "--timeout",
            "5s",
            f"http://{HOST}:{port}/hello",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    )
    if "Non-2xx" in result.stdout or "Socket errors" in result.stdout:
        raise RuntimeError(f"wrk saw errors:\n{result.stdout}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{result.stdout}")
    return float(match.group(1))


def bench_gunicorn(args: argparse.Namespace, logs: str, results: Results) -> float:
    ports = {"off": free_port(), "on": free_port()}
    with ExitStack() as servers:
        for variant, port in ports.items():
            errors = os.path.join(logs, f"gunicorn-{variant}.stderr")
            servers.enter_context(gunicorn(port, variant == "on", 1, errors))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        if get(ports["on"], "/metrics", auth)[0] != 200 or get(ports["off"], "/metrics")[0] != 404:
            raise RuntimeError("metrics must be served by the 'on' server only")
        for port in ports.values():
            wrk(port, 1)  # warm up
        best = dict.fromkeys(ports, 0.0)
        for _ in range(args.repeat):
            for variant, port in ports.items():
                best[variant] = max(best[variant], wrk(port, args.duration))
    print(f"\ngunicorn (1 worker, 2 threads), wrk, best of {args.repeat} x {args.duration:g} s:")
    for variant, rate in best.items():
        print(f"  {rate:10.0f} req/s  metrics {variant}")
        results.absolute(f"gunicorn, metrics {variant}", rate, "req/s", better="higher")
    ratio = best["on"] / best["off"]
    verdict = "ok" if ratio >= THROUGHPUT_TARGET else "MISSED"
    print(f"  ratio on / off: {ratio:.3f}  (>= {THROUGHPUT_TARGET:.2f})  {verdict}")
    return results.ratio(
        "gunicorn: metrics on / off", ratio, target=THROUGHPUT_TARGET, better="higher"
    )


def bench_scrape(args: argparse.Namespace, logs: str, results: Results) -> float:
    port = free_port()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with gunicorn(port, True, 4, os.path.join(logs, "gunicorn-scrape.stderr")):
        paths = ["/hello", *(f"/r{number}" for number in range(EXTRA_ROUTES))]
        # New connections land on any worker: enough of them that each worker writes
        # a file for every route.
        for _ in range(40):
            for path in paths:
                get(port, path)
        status, body = get(port, "/metrics", auth)
        if status != 200:
            raise RuntimeError(f"scrape answered {status}")
        series = [line for line in body.decode().splitlines() if line and line[0] != "#"]
        if len(series) < MIN_SERIES:
            raise RuntimeError(f"only {len(series)} series, {MIN_SERIES} wanted")
        times = []
        for _ in range(args.scrapes):
            started = time.perf_counter()
            status, _ = get(port, "/metrics", auth)
            times.append((time.perf_counter() - started) * 1000.0)
            if status != 200:
                raise RuntimeError(f"scrape answered {status}")
    median = statistics.median(times)
    verdict = "ok" if median < SCRAPE_TARGET_MS else "MISSED"
    print(f"\nscrape, 4 workers, {len(series)} series, {args.scrapes} scrapes:")
    print(f"  median {median:.1f} ms, max {max(times):.1f} ms  (< {SCRAPE_TARGET_MS:g})  {verdict}")
    results.absolute("scrape: series", len(series), "series", better="lower")
    results.absolute("scrape: max", max(times), "ms", better="lower")
    return results.absolute(
        "scrape: median, 4 workers", median, "ms", target=SCRAPE_TARGET_MS, better="lower"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk round")
    parser.add_argument("--scrapes", type=int, default=30)
    add_json_option(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)")
        return 2
    results = Results("bench_metrics")
    client_ratio = bench_test_client(args, results)
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as logs:
        gunicorn_ratio = bench_gunicorn(args, logs, results)
        scrape_ms = bench_scrape(args, logs, results)
    results.write(args.json)
    ok = (
        client_ratio >= THROUGHPUT_TARGET
        and gunicorn_ratio >= THROUGHPUT_TARGET
        and scrape_ms < SCRAPE_TARGET_MS
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
