"""The trivial Flask and Django apps under gunicorn, bare and with backend_kit.

    python benchmarks/bench_gunicorn.py [--duration 3] [--repeat 5] [--connections 4] [--json PATH]

Needs ``wrk`` (Debian/Ubuntu: ``apt-get install wrk``; macOS: ``brew install wrk``).

For each framework, two gunicorn servers run side by side on 127.0.0.1, same settings
(one ``gthread`` worker, ``--threads`` threads (2), keep-alive, no access log, stdout to
``/dev/null``): the bare app and the same app with backend_kit, whose one
``request_finished`` JSON line per request at info goes to gunicorn's stdout, i.e.
``/dev/null``. The apps are in ``benchmarks/apps/``. ``wrk`` (one thread,
``--connections`` keep-alive connections) loads each server for ``--duration`` seconds
per round, the rounds of the servers interleaved; each figure is the best of
``--repeat`` rounds. Target: backend_kit keeps at least 95% of the bare throughput.
A third server per framework runs the bare app with a minimal adapter that writes
backend_kit's line with orjson alone (``apps/orjson_line.py``) to the same stdout: the
time it adds to a request is the in-request floor that backend_kit's added time must
stay within 2x of (the tight-loop figure of `_line_floor` is printed too, for
reference). Exits with status 1 when a check misses (2 when wrk is missing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from contextlib import ExitStack

from _line_floor import orjson_line_microseconds, report_added
from _report import Results, add_json_option
from _servers import free_port, get, gunicorn, interleaved_rates

TARGET = 0.95

APPS = {
    "Flask": {
        "bare": "apps.flask_app:create_app(kit=False)",
        "backend_kit": "apps.flask_app:create_app(kit=True)",
        "orjson floor": "apps.flask_app:create_orjson_floor_app()",
    },
    "Django": {
        "bare": "apps.django_app:create_application(kit=False)",
        "backend_kit": "apps.django_app:create_application(kit=True)",
        "orjson floor": "apps.django_app:create_application(kit=False, floor=True)",
    },
}


def bench_framework(
    framework: str, args: argparse.Namespace, logs: str, results: Results, floor: float
) -> tuple[float, bool]:
    ports = {variant: free_port() for variant in APPS[framework]}
    with ExitStack() as servers:
        for variant, app in APPS[framework].items():
            errors = os.path.join(logs, f"{framework}-{variant.replace(' ', '-')}.stderr")
            servers.enter_context(gunicorn(app, ports[variant], errors, threads=args.threads))
        kit_id = get(ports["backend_kit"], "/hello", timeout=2).headers.get("X-Request-ID")
        bare_id = get(ports["bare"], "/hello", timeout=2).headers.get("X-Request-ID")
        if not kit_id or bare_id is not None:
            raise RuntimeError(f"backend_kit not (only) on the kit server: {kit_id=} {bare_id=}")
        rates = interleaved_rates(
            ports, rounds=args.repeat, duration=args.duration, connections=args.connections
        )
    best = {variant: max(values) for variant, values in rates.items()}
    print(f"\n{framework}, best of {args.repeat} rounds x {args.duration:g} s:")
    for variant, rate in best.items():
        print(f"  {rate:10.0f} req/s  {framework} {variant}")
        results.absolute(f"{framework} {variant}", rate, "req/s", better="higher")
    ratio = best["backend_kit"] / best["bare"]
    verdict = "ok" if ratio >= TARGET else "MISSED"
    print(f"  ratio backend_kit / bare: {ratio:.3f}  (>= {TARGET:.2f})  {verdict}")
    added = 1e6 / best["backend_kit"] - 1e6 / best["bare"]
    print(f"  (info) time backend_kit adds to a request: {added:.0f} µs")
    results.absolute(
        f"{framework}: time backend_kit adds to a request", added, "µs", better="lower"
    )
    in_request = 1e6 / best["orjson floor"] - 1e6 / best["bare"]
    results.absolute(
        f"{framework}: time the orjson line adapter adds to a request",
        in_request,
        "µs",
        better="lower",
    )
    within = report_added(added, floor, in_request, indent="  ")
    ratio = results.ratio(f"{framework}: backend_kit / bare", ratio, target=TARGET, better="higher")
    return ratio, within


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per round")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="gunicorn threads per worker")
    parser.add_argument("--framework", choices=[*APPS, "all"], default="all")
    add_json_option(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print(
            "wrk is needed: apt-get install wrk (Debian/Ubuntu) or brew install wrk (macOS)",
            file=sys.stderr,
        )
        return 2
    frameworks = list(APPS) if args.framework == "all" else [args.framework]
    results = Results("bench_gunicorn")
    floor = orjson_line_microseconds()
    results.absolute("one request line with orjson alone", floor, "µs", better="lower")
    with tempfile.TemporaryDirectory(prefix="bench-gunicorn-") as logs:
        outcomes = [
            bench_framework(framework, args, logs, results, floor) for framework in frameworks
        ]
    results.write(args.json)
    return 0 if all(ratio >= TARGET and within for ratio, within in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
