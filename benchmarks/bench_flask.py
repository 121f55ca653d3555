"""A trivial Flask route, bare and with backend_kit, side by side in one run.

    python benchmarks/bench_flask.py [--requests 3000] [--repeat 7] [--json PATH]

The apps (``benchmarks/apps/flask_app.py``) answer ``GET /hello`` with a small JSON
body through Flask's test client. The backend_kit app is the same app after
`backend_kit.flask.init_app`: a request id, the ``X-Request-ID`` header and one
``request_finished`` JSON line at info per request, written (and flushed) to
``/dev/null``. Each figure is the best of ``--repeat`` rounds of ``--requests``
requests, the rounds of both apps interleaved. Target: backend_kit keeps at least 90%
of the bare throughput. Exits with status 1 when it does not. For reference, a third
app logs each request by hand on plain structlog (same fields, no redaction): the cost
of request logging itself, without backend_kit; a fourth writes the same fields with
nothing but ``orjson.dumps`` and one write: the floor under any JSON request line. A
fifth is the bare app inside a WSGI middleware that writes backend_kit's line (same
fields, a fresh request id) with orjson alone: the time it adds to a request is the
in-request floor that backend_kit's added time must stay within 2x of (the
tight-loop figure of `_line_floor` is printed too, for reference).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time

from flask import Flask
from flask.testing import FlaskClient

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _line_floor import orjson_line_microseconds, report_added
from _report import Results, add_json_option
from apps import orjson_line
from apps.flask_app import (
    create_app,
    create_hand_logged_app,
    create_orjson_floor_app,
    create_orjson_logged_app,
)

from backend_kit import configure_logging

TARGET = 0.90


def requests_per_second(client: FlaskClient, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        response = client.get("/hello")
        response.close()
    return count / (time.perf_counter() - started)


def show_one_line(kit: Flask) -> None:
    """Send one request with the log lines captured, to show they really are written."""
    captured = io.StringIO()
    # The app's own (active) settings, only the stream changes.
    configure_logging(stream=captured)
    response = kit.test_client().get("/hello")
    lines = captured.getvalue().splitlines()
    if response.status_code != 200 or len(lines) != 1:
        raise RuntimeError(
            f"expected one 200 and one log line, got {response.status_code}, {lines}"
        )
    print(f"one request, backend_kit's line:\n    {lines[0]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3_000)
    parser.add_argument("--repeat", type=int, default=7)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("bench_flask")

    bare = create_app(kit=False)
    kit = create_app(kit=True)
    show_one_line(kit)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    configure_logging(stream=devnull)

    hand = create_hand_logged_app(devnull)
    floor = create_orjson_logged_app(devnull)
    orjson_line.STREAM = devnull
    floor_middleware = create_orjson_floor_app()
    clients = {
        "bare Flask": bare.test_client(),
        "Flask + backend_kit": kit.test_client(),
        "Flask + hand-written structlog request logging": hand.test_client(),
        "Flask + hand-written orjson request line": floor.test_client(),
        "Flask + orjson line WSGI middleware (in-request floor)": floor_middleware.test_client(),
    }
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
    ratio = best["Flask + backend_kit"] / best["bare Flask"]
    verdict = "ok" if ratio >= TARGET else "MISSED"
    print(f"\nratio backend_kit / bare: {ratio:.3f}  (>= {TARGET:.2f})  {verdict}")
    results.ratio("backend_kit / bare", ratio, target=TARGET, better="higher")
    reference = best["Flask + backend_kit"] / best["Flask + hand-written structlog request logging"]
    print(f"(info) backend_kit / hand-written structlog request logging: {reference:.3f}")
    results.ratio(
        "backend_kit / hand-written structlog request logging", reference, better="higher"
    )
    logging_only = best["Flask + hand-written structlog request logging"] / best["bare Flask"]
    print(f"(info) hand-written request logging / bare: {logging_only:.3f}")
    results.ratio("hand-written request logging / bare", logging_only, better="higher")
    cheapest = best["Flask + hand-written orjson request line"] / best["bare Flask"]
    print(f"(info) hand-written orjson request line (no structlog) / bare: {cheapest:.3f}")
    results.ratio("hand-written orjson request line / bare", cheapest, better="higher")
    added = 1e6 / best["Flask + backend_kit"] - 1e6 / best["bare Flask"]
    print(f"(info) time backend_kit adds to a request: {added:.0f} µs")
    results.absolute("time backend_kit adds to a request", added, "µs", better="lower")
    in_request = (
        1e6 / best["Flask + orjson line WSGI middleware (in-request floor)"]
        - 1e6 / best["bare Flask"]
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
