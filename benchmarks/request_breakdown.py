"""Where the time backend_kit adds to a request goes, part by part, in one run.

    python benchmarks/request_breakdown.py [--calls 20000] [--repeat 5]

Each figure is the best of ``--repeat`` rounds of ``--calls`` calls, in µs per call,
with logging at info to ``/dev/null``:

- the whole request core (``start``, the probe lookup, the response headers and
  ``finish`` with its ``request_finished`` line);
- entering and leaving the request context alone;
- the ``request_finished`` line alone, through backend_kit's logger, inside a context,
  and the same line through the request core's direct writer (`EventWriter`, which
  calls the default JSON pipeline's steps without structlog's dispatch);
- the floors under them: one context variable set and reset, one timestamp, one
  ``orjson.dumps`` of the finished line, one locked write and flush to ``/dev/null``;
- the same line written with nothing but ``orjson.dumps`` and one write and flush:
  the floor under any JSON request line.

These are tight loops: inside a real request (the framework's code running between
two calls) every figure is two to three times larger on a small shared machine, the
floor included; see "Where a request's time goes" in ``docs/performance.md``.

Informational: it prints the figures and exits 0. The request benchmarks
(``bench_flask.py``, ``bench_django.py``, ``bench_gunicorn.py``) hold the targets.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import timeit
from contextvars import ContextVar

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import orjson
from _line_floor import orjson_line_microseconds
from apps.flask_app import bench_settings

from backend_kit import configure, configure_logging, get_logger, request_context
from backend_kit._logging import EventWriter, capture_events, sink
from backend_kit._logging._clock import clock
from backend_kit._request_core import RequestCore
from backend_kit.health import HealthRegistry, HealthRunner


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    settings = bench_settings()
    configure(settings)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    configure_logging(stream=devnull)
    core = RequestCore(settings, HealthRunner(HealthRegistry(), settings=settings))
    log = get_logger("backend_kit.request")

    def whole_core() -> None:
        active = core.start(None)
        core.probe_for("/hello")
        core.response_headers(active, may_close=False)
        core.finish(
            active,
            method="GET",
            route="/hello",
            path="/hello",
            status=200,
            remote_address="127.0.0.1",
            forwarded_for=None,
        )

    def context_alone() -> None:
        with request_context(None):
            pass

    def line_alone() -> None:
        log.info(
            "request_finished",
            method="GET",
            route="/hello",
            path="/hello",
            status=200,
            duration_ms=0.123,
            client="127.0.0.1",
        )

    def best(function: object) -> float:
        rounds = timeit.repeat(function, number=args.calls, repeat=args.repeat)  # type: ignore[arg-type]
        return min(rounds) / args.calls * 1e6

    writer = EventWriter("backend_kit.request")

    def line_direct() -> None:
        writer.write(
            "info",
            logging.INFO,
            "request_finished",
            {
                "method": "GET",
                "route": "/hello",
                "path": "/hello",
                "status": 200,
                "duration_ms": 0.123,
                "client": "127.0.0.1",
            },
        )

    variable: ContextVar[int] = ContextVar("bench", default=0)

    def variable_set_and_reset() -> None:
        variable.reset(variable.set(1))

    figures = {"the whole request core": best(whole_core)}
    figures["request context, enter and leave"] = best(context_alone)
    figures["(floor) one context variable, set and reset"] = best(variable_set_and_reset)
    with request_context("c3fc1b7901b6747ff697c052d164f855"):
        figures["the request_finished line through backend_kit's logger"] = best(line_alone)
        figures["the same line through the request core's direct writer"] = best(line_direct)
        with capture_events() as captured:
            line_direct()
        finished = dict(captured[0])
    figures["(floor) one timestamp"] = best(clock.stamp)
    figures["(floor) orjson.dumps of the finished line"] = best(
        lambda: orjson.dumps(finished).decode()
    )
    text = orjson.dumps(finished).decode()
    figures["(floor) one locked write and flush to /dev/null"] = best(lambda: sink.write(text))
    figures["the same line with orjson alone (the floor)"] = orjson_line_microseconds(
        lines=args.calls, repeat=args.repeat
    )
    print(f"best of {args.repeat} rounds x {args.calls} calls, µs per call:")
    for name, value in figures.items():
        print(f"  {value:7.2f} µs  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
