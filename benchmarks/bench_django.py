"""A trivial Django view, bare and with backend_kit, side by side in one run.

    python benchmarks/bench_django.py [--requests 3000] [--repeat 7] [--json PATH]

One project (``benchmarks/apps/django_app.py``), two test clients: the bare one runs
with no middleware at all; the other with backend_kit's app installed and its
``RequestContextMiddleware`` (a request id, the ``X-Request-ID`` header and one
``request_finished`` JSON line at info per request, written and flushed to
``/dev/null``). Both answer ``GET /hello`` with a small `JsonResponse`. Each figure is
the best of ``--repeat`` rounds of ``--requests`` requests, the rounds interleaved.
Target: backend_kit keeps at least 90% of the bare throughput. A third client runs
the bare project with one minimal middleware that writes backend_kit's line (same
fields, a fresh request id) with orjson alone: the time it adds to a request is the
in-request floor that backend_kit's added time must stay within 2x of (the tight-loop
figure of `_line_floor` is printed too, for reference). Exits with status 1 when
either check misses.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _line_floor import orjson_line_microseconds, report_added
from _report import Results, add_json_option
from apps import orjson_line
from apps.django_app import FLOOR_MIDDLEWARE, KIT_MIDDLEWARE, setup_django
from django.test import Client
from django.test.utils import override_settings

from backend_kit import configure_logging

TARGET = 0.90


def requests_per_second(client: Client, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        client.get("/hello")
    return count / (time.perf_counter() - started)


def client_with(middleware: list[str]) -> Client:
    """A test client whose handler loaded *middleware* (it keeps the chain it built)."""
    client = Client()
    with override_settings(MIDDLEWARE=middleware):
        if client.get("/hello").status_code != 200:
            raise RuntimeError(f"GET /hello failed with MIDDLEWARE={middleware}")
    return client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=7)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("bench_django")

    # backend_kit's app is installed for both; only the middleware differs per client.
    setup_django(kit=True)
    captured = io.StringIO()
    # The settings backend_kit's app loaded (active), only the stream changes.
    configure_logging(stream=captured)
    clients = {
        "bare Django": client_with([]),
        "Django + backend_kit": client_with([KIT_MIDDLEWARE]),
    }
    orjson_line.STREAM = io.StringIO()
    clients["Django + orjson line middleware (in-request floor)"] = client_with([FLOOR_MIDDLEWARE])
    captured.seek(0)
    captured.truncate()
    clients["bare Django"].get("/hello")
    response = clients["Django + backend_kit"].get("/hello")
    lines = captured.getvalue().splitlines()
    if response.status_code != 200 or len(lines) != 1:
        raise RuntimeError(
            f"expected one 200 and one log line, got {response.status_code}, {lines}"
        )
    print(f"one request each, backend_kit's only line:\n    {lines[0]}")
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    configure_logging(stream=devnull)
    orjson_line.STREAM = devnull

    for client in clients.values():
        requests_per_second(client, 200)  # warm up
    best = dict.fromkeys(clients, 0.0)
    for _ in range(args.repeat):
        for name, client in clients.items():
            best[name] = max(best[name], requests_per_second(client, args.requests))

    print(f"\nbest of {args.repeat} rounds x {args.requests} requests (test client):")
    for name, rate in best.items():
        print(f"  {rate:10.0f} req/s  {name}")
        results.absolute(name, rate, "req/s", better="higher")
    ratio = best["Django + backend_kit"] / best["bare Django"]
    verdict = "ok" if ratio >= TARGET else "MISSED"
    print(f"\nratio backend_kit / bare: {ratio:.3f}  (>= {TARGET:.2f})  {verdict}")
    results.ratio("backend_kit / bare", ratio, target=TARGET, better="higher")
    added = 1e6 / best["Django + backend_kit"] - 1e6 / best["bare Django"]
    print(f"(info) time backend_kit adds to a request: {added:.0f} µs")
    results.absolute("time backend_kit adds to a request", added, "µs", better="lower")
    in_request = (
        1e6 / best["Django + orjson line middleware (in-request floor)"] - 1e6 / best["bare Django"]
    )
    results.absolute(
        "time the orjson line middleware adds to a request", in_request, "µs", better="lower"
    )
    tight = orjson_line_microseconds()
    results.absolute("one request line with orjson alone", tight, "µs", better="lower")
    within = report_added(added, tight, in_request)
    results.write(args.json)
    return 0 if ratio >= TARGET and within else 1


if __name__ == "__main__":
    sys.exit(main())
