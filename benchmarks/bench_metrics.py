"""The cost of backend_kit's metrics: the same app with metrics on and off, side by side.

    python benchmarks/bench_metrics.py [--requests 1500] [--repeat 11] [--rounds 5]
                                       [--servers 2] [--duration 1] [--scrapes 30]
                                       [--only PART] [--json PATH]

0. **Recorder.** The time one ``MetricsRecorder.request_finished`` takes (a counter and
   a histogram), in process memory and in prometheus_client's multiprocess mode (memory-
   mapped files, as under gunicorn), each in a fresh process; for information.
1. **Test client.** ``GET /hello`` through Flask's test client
   (``benchmarks/apps/metrics_app.py``) and Django's (``benchmarks/apps/django_app.py``
   with backend_kit's middleware), metrics off and on (request logging at info to
   ``/dev/null`` in both); each figure is the best of ``--repeat`` rounds of
   ``--requests`` requests, the rounds interleaved (every other one on first), in
   requests per second of the process's CPU time (the time other processes hold the
   core is left out). Target: on keeps >= 95% of off.
2. **gunicorn.** The same Flask and Django apps under ``gunicorn -c
   python:backend_kit.gunicorn`` (one gthread worker, 2 threads, keep-alive), metrics
   off and on (on means prometheus_client's multiprocess mode, as in production),
   ``--servers`` servers a side, all with one hash seed, each started once (two
   processes of one program differ by a few percent in speed, by their memory layout;
   two a side halve that). After a warm-up run each, ``wrk`` (one thread, 4
   connections) loads them in turn for ``--duration`` seconds, ``--rounds`` rounds,
   every other round in reverse order. The verdict compares the median run of each
   side, which a few busy moments of a shared machine cannot move. Target: on keeps
   >= 95% of off. For information, the workers' CPU time per request (read from
   ``/proc``), which other processes delay but do not add to. Needs ``wrk``.
3. **Scrape.** Four workers, every route requested, so the workers' files hold at
   least 200 series; the median time of ``--scrapes`` scrapes of ``/metrics`` (a new
   connection each, as Prometheus does). Target: under 50 ms.

``--only recorder|client|gunicorn|scrape`` (repeatable) runs those parts alone. Exits
with status 1 when a target is missed (2 when wrk is missing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import Results, add_json_option
from _servers import BENCHMARKS, free_port, get, gunicorn, interleaved_runs
from apps.django_app import setup_django
from apps.metrics_app import EXTRA_ROUTES, bench_settings, create_app
from django.test import Client as DjangoClient

import backend_kit
from backend_kit import configure_logging
from backend_kit.metrics import MULTIPROC_VARIABLE

THROUGHPUT_TARGET = 0.95
SCRAPE_TARGET_MS = 50.0
MIN_SERIES = 200
TOKEN = "bench-scrape-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PARTS = ("recorder", "client", "gunicorn", "scrape")
SIDES = ("off", "on")
#: The app each framework serves under gunicorn; METRICS_ENABLED in the environment
#: turns the metrics on or off.
GUNICORN_APPS = {
    "Flask": "apps.metrics_app:create_app()",
    "Django": "apps.django_app:create_application(kit=True)",
}


def verdict(ratio: float) -> str:
    return "ok" if ratio >= THROUGHPUT_TARGET else "MISSED"


# --- 0. recorder --------------------------------------------------------------------


def recorder_microseconds(multiprocess: bool) -> float:
    env = {name: value for name, value in os.environ.items() if name != MULTIPROC_VARIABLE}
    with tempfile.TemporaryDirectory(prefix="bench-recorder-") as directory:
        if multiprocess:
            env[MULTIPROC_VARIABLE] = directory
        result = subprocess.run(
            [sys.executable, os.path.join(BENCHMARKS, "_recorder_cost.py")],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
    return float(result.stdout.split()[-1])


def bench_recorder(results: Results) -> None:
    print("\nrecorder, one request_finished (a counter and a histogram), best of 5 x 100000:")
    for multiprocess, where in ((False, "process memory"), (True, "multiprocess mode")):
        cost = recorder_microseconds(multiprocess)
        print(f"  {cost:6.2f} µs  {where}")
        results.absolute(f"recorder: one request, {where}", cost, "µs", better="lower")


# --- 1. test client -----------------------------------------------------------------


def requests_per_second(request: Callable[[], object], count: int) -> float:
    # Per second of this process's CPU time: the time other processes on a shared
    # machine hold the core is not the metrics' cost.
    started = time.process_time()
    for _ in range(count):
        request()
    return count / (time.process_time() - started)


def django_test_client() -> DjangoClient:
    # backend_kit's middleware serves /metrics only when METRICS_ENABLED was on at setup;
    # each round below then turns the recording itself on or off.
    os.environ.update(METRICS_ENABLED="true", METRICS_TOKEN=TOKEN)
    setup_django(kit=True)
    return DjangoClient()


def bench_test_client(args: argparse.Namespace, results: Results) -> list[float]:
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    apps = {"off": create_app(metrics=False), "on": create_app(metrics=True)}
    flask = {variant: app.test_client() for variant, app in apps.items()}
    django = django_test_client()

    def flask_get(variant: str) -> Callable[[], object]:
        return lambda: flask[variant].get("/hello").close()

    frameworks: dict[str, dict[str, Callable[[], object]]] = {
        "Flask": {variant: flask_get(variant) for variant in flask},
        # One Django client: metrics are process-wide, configure() below switches them.
        "Django": dict.fromkeys(("off", "on"), lambda: django.get("/hello")),
    }

    def activate(variant: str) -> None:
        # Metrics are process-wide: configure() turns them on or off for the round.
        backend_kit.configure(bench_settings(variant == "on"))
        configure_logging(stream=devnull)

    best = {name: dict.fromkeys(("off", "on"), 0.0) for name in frameworks}
    for requests in frameworks.values():
        for variant, request in requests.items():
            activate(variant)
            requests_per_second(request, 300)  # warm up
    for number in range(args.repeat):
        for name, requests in frameworks.items():
            # Every other round on first, so a drift of the machine's load favours neither.
            for variant in ("off", "on") if number % 2 == 0 else ("on", "off"):
                request = requests[variant]
                activate(variant)
                rate = requests_per_second(request, args.requests)
                best[name][variant] = max(best[name][variant], rate)
    activate("on")
    flask_scrape = flask["on"].get("/metrics", headers=AUTH).data
    django_scrape = django.get("/metrics", headers=AUTH).content
    if b'route="/hello"' not in flask_scrape or b'route="hello"' not in django_scrape:
        raise RuntimeError("metrics on, yet /hello was not counted")
    ratios = []
    for name, rates in best.items():
        print(
            f"\n{name} test client, best of {args.repeat} rounds x {args.requests} requests "
            "(per CPU second):"
        )
        for variant, rate in rates.items():
            print(f"  {rate:10.0f} req/s  metrics {variant}")
            results.absolute(
                f"{name} test client, metrics {variant}", rate, "req/s", better="higher"
            )
        ratio = rates["on"] / rates["off"]
        print(f"  ratio on / off: {ratio:.3f}  (>= {THROUGHPUT_TARGET:.2f})  {verdict(ratio)}")
        added = 1e6 / rates["on"] - 1e6 / rates["off"]
        print(f"  (info) time the metrics add to a request: {added:.1f} µs")
        ratios.append(
            results.ratio(
                f"{name} test client: metrics on / off",
                ratio,
                target=THROUGHPUT_TARGET,
                better="higher",
            )
        )
    return ratios


# --- 2. and 3. gunicorn -------------------------------------------------------------


def server_env(metrics: bool) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("METRICS_", "PROMETHEUS_", "LOG_", "SENTRY_"))
    }
    env.update(
        # One hash seed for both servers: dict layouts, and so their speed, then differ
        # by the metrics alone, not by the draw of two random seeds.
        PYTHONHASHSEED="0",
        METRICS_ENABLED="true" if metrics else "false",
        METRICS_TOKEN=TOKEN,
        SERVICE_NAME=f"bench-metrics-{'on' if metrics else 'off'}",
        ENVIRONMENT="production",
    )
    return env


def bench_gunicorn(framework: str, args: argparse.Namespace, logs: str, results: Results) -> float:
    # Names "off 1", "on 1", "off 2", ...: --servers servers a side, each started once.
    names = [f"{variant} {number}" for number in range(1, args.servers + 1) for variant in SIDES]
    servers: dict[str, tuple[int, int]] = {}
    with ExitStack() as stack:
        for name in names:
            port = free_port()
            errors = os.path.join(logs, f"gunicorn-{framework}-{name.replace(' ', '-')}.stderr")
            env = server_env(name.startswith("on"))
            app = GUNICORN_APPS[framework]
            master = stack.enter_context(
                gunicorn(app, port, errors, config="python:backend_kit.gunicorn", env=env)
            )
            servers[name] = (port, master)
            expected = 200 if name.startswith("on") else 404
            if get(port, "/metrics", AUTH).status != expected:
                raise RuntimeError("metrics must be served by the 'on' servers only")
        runs = interleaved_runs(
            servers, rounds=args.rounds, duration=args.duration, connections=4, alternate=True
        )
    print(
        f"\ngunicorn, {framework} (1 worker, 2 threads), wrk, {args.servers} servers a side, "
        f"{args.rounds} interleaved rounds x {args.duration:g} s:"
    )
    side_runs = {
        variant: [run for name in names if name.startswith(variant) for run in runs[name]]
        for variant in SIDES
    }
    medians = {
        variant: statistics.median(run.rate for run in side) for variant, side in side_runs.items()
    }
    cpu: dict[str, float | None] = {}
    for variant, side in side_runs.items():
        cpu_us = [run.cpu_us for run in side if run.cpu_us is not None]
        cpu[variant] = statistics.median(cpu_us) if cpu_us else None
        best = max(run.rate for run in side)
        worker_cpu = f", worker CPU {cpu[variant]:.0f} µs/request" if cpu[variant] else ""
        rate = f"median {medians[variant]:8.0f} req/s (best {best:.0f})"
        print(f"  {rate}{worker_cpu}  metrics {variant}")
        results.absolute(
            f"gunicorn {framework}, metrics {variant}", medians[variant], "req/s", better="higher"
        )
    ratio = medians["on"] / medians["off"]
    print(f"  ratio on / off, medians: {ratio:.3f}  (>= {THROUGHPUT_TARGET:.2f})  {verdict(ratio)}")
    paired = sorted(
        on.rate / off.rate for on, off in zip(side_runs["on"], side_runs["off"], strict=True)
    )
    print(
        f"  (info) round by round: median {statistics.median(paired):.3f}, "
        f"{paired[0]:.3f} to {paired[-1]:.3f}"
    )
    if cpu["on"] and cpu["off"]:
        added = cpu["on"] - cpu["off"]
        print(f"  (info) worker CPU the metrics add to a request: {added:.1f} µs (medians)")
        results.absolute(
            f"gunicorn {framework}: worker CPU the metrics add", added, "µs", better="lower"
        )
    return results.ratio(
        f"gunicorn {framework}: metrics on / off",
        ratio,
        target=THROUGHPUT_TARGET,
        better="higher",
    )


def bench_scrape(args: argparse.Namespace, logs: str, results: Results) -> float:
    port = free_port()
    errors = os.path.join(logs, "gunicorn-scrape.stderr")
    config = "python:backend_kit.gunicorn"
    with gunicorn(
        GUNICORN_APPS["Flask"], port, errors, workers=4, config=config, env=server_env(True)
    ):
        paths = ["/hello", *(f"/r{number}" for number in range(EXTRA_ROUTES))]
        # New connections land on any worker: enough of them that each worker writes
        # a file for every route.
        for _ in range(40):
            for path in paths:
                get(port, path)
        status, _, body = get(port, "/metrics", AUTH)
        if status != 200:
            raise RuntimeError(f"scrape answered {status}")
        series = [line for line in body.decode().splitlines() if line and line[0] != "#"]
        if len(series) < MIN_SERIES:
            raise RuntimeError(f"only {len(series)} series, {MIN_SERIES} wanted")
        times = []
        for _ in range(args.scrapes):
            started = time.perf_counter()
            status = get(port, "/metrics", AUTH).status
            times.append((time.perf_counter() - started) * 1000.0)
            if status != 200:
                raise RuntimeError(f"scrape answered {status}")
    median = statistics.median(times)
    met = "ok" if median < SCRAPE_TARGET_MS else "MISSED"
    print(f"\nscrape, 4 workers, {len(series)} series, {args.scrapes} scrapes:")
    print(f"  median {median:.1f} ms, max {max(times):.1f} ms  (< {SCRAPE_TARGET_MS:g})  {met}")
    results.absolute("scrape: series", len(series), "series", better="lower")
    results.absolute("scrape: max", max(times), "ms", better="lower")
    return results.absolute(
        "scrape: median, 4 workers", median, "ms", target=SCRAPE_TARGET_MS, better="lower"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_500)
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--rounds", type=int, default=5, help="wrk rounds per server")
    parser.add_argument(
        "--servers", type=int, default=2, help="gunicorn servers a side (metrics off, on)"
    )
    parser.add_argument("--duration", type=int, default=1, help="seconds per wrk round")
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument(
        "--only",
        choices=PARTS,
        action="append",
        help="run only this part (repeatable); all of them by default",
    )
    add_json_option(parser)
    args = parser.parse_args()
    parts = args.only or PARTS
    if shutil.which("wrk") is None and {"gunicorn", "scrape"} & set(parts):
        print("wrk is needed: apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)")
        return 2
    results = Results("bench_metrics")
    ratios: list[float] = []
    scrape_ms = 0.0
    if "recorder" in parts:
        bench_recorder(results)
    if "client" in parts:
        ratios += bench_test_client(args, results)
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as logs:
        if "gunicorn" in parts:
            ratios += [bench_gunicorn(name, args, logs, results) for name in GUNICORN_APPS]
        if "scrape" in parts:
            scrape_ms = bench_scrape(args, logs, results)
    results.write(args.json)
    ok = all(ratio >= THROUGHPUT_TARGET for ratio in ratios) and scrape_ms < SCRAPE_TARGET_MS
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
