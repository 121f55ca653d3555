"""backend_kit logging side by side with the raw libraries, in one run.

    python benchmarks/bench_logging.py [--calls 20000] [--repeat 7] [--json PATH]

Every contender writes one JSON line per call to its own in-memory ``io.StringIO`` sink
(flushed after every line, as a stream handler does). Each figure is the best of
``--repeat`` rounds of ``--calls`` calls, the rounds of all contenders interleaved so
that machine noise hits them alike. Targets (the script exits with status 1 when one
is missed):

* a filtered ``debug`` call through a logger from ``get_logger()``, made at module level
  before ``configure_logging()``, costs at most 1.0x the standard library's filtered
  ``debug`` call;
* an emitted JSON ``info`` line with three bound fields, redaction on, costs at most
  0.5x stdlib ``logging`` with python-json-logger, and at most 1.1x bare structlog with
  the same processors minus redaction.
"""

from __future__ import annotations

import argparse
import io
import logging
import time
from collections.abc import Callable

import orjson
import structlog
from _report import Results, add_json_option
from pythonjsonlogger.json import JsonFormatter
from pythonjsonlogger.orjson import OrjsonFormatter

from backend_kit import configure_logging, get_logger, load_settings

# Made at import, before configure_logging(), as a module-level logger is.
MODULE_LOGGER = get_logger("bench.module")

FIELDS = {"user_id": 1234, "order_id": "ord_8f3a2c", "path": "/api/orders"}


def _reset(sink: io.StringIO) -> None:
    sink.seek(0)
    sink.truncate()


def backend_kit_logger(sink: io.StringIO) -> structlog.typing.FilteringBoundLogger:
    configure_logging(
        load_settings(service_name="bench", environment="production"),
        level="INFO",
        format="json",
        stream=sink,
    )
    return get_logger("bench").bind(**FIELDS)


def plain_structlog_logger(sink: io.StringIO) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.wrap_logger(
        structlog.WriteLogger(sink),
        # structlog's own counterparts of backend_kit's steps, but the redaction: the
        # request context, the level, the timestamp, exception formatting, JSON.
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(
                serializer=lambda obj, **_: orjson.dumps(obj).decode()
            ),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=True,
    )
    # Same visible fields as backend_kit's line: logger, service, environment + 3 bound.
    return logger.bind(logger="bench", service="bench", environment="production", **FIELDS)


def stdlib_logger(sink: io.StringIO, formatter: logging.Formatter, name: str) -> logging.Logger:
    handler = logging.StreamHandler(sink)
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger


def measure(call: Callable[[], object], sink: io.StringIO, calls: int) -> float:
    """Seconds per call for one round."""
    _reset(sink)
    started = time.perf_counter()
    for _ in range(calls):
        call()
    elapsed = time.perf_counter() - started
    return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("bench_logging")

    sinks = {name: io.StringIO() for name in ("kit", "structlog", "pjl", "pjl_orjson")}
    kit = backend_kit_logger(sinks["kit"])
    plain = plain_structlog_logger(sinks["structlog"])
    json_format = "%(asctime)s %(levelname)s %(name)s %(message)s"
    pjl = stdlib_logger(sinks["pjl"], JsonFormatter(json_format), "bench.pjl")
    pjl_orjson = stdlib_logger(
        sinks["pjl_orjson"], OrjsonFormatter(json_format), "bench.pjl_orjson"
    )

    contenders: dict[str, tuple[Callable[[], object], io.StringIO]] = {
        "backend_kit info (JSON, 3 bound fields, redaction)": (
            lambda: kit.info("order_created"),
            sinks["kit"],
        ),
        "backend_kit debug (filtered out)": (lambda: kit.debug("order_created"), sinks["kit"]),
        "backend_kit debug, module-level logger (filtered out)": (
            lambda: MODULE_LOGGER.debug("order_created"),
            sinks["kit"],
        ),
        "stdlib logging debug (filtered out)": (
            lambda: pjl.debug("order_created"),
            sinks["pjl"],
        ),
        "bare structlog JSON, same steps minus redaction": (
            lambda: plain.info("order_created"),
            sinks["structlog"],
        ),
        "stdlib logging + python-json-logger": (
            lambda: pjl.info("order_created", extra=FIELDS),
            sinks["pjl"],
        ),
        "stdlib logging + python-json-logger (orjson)": (
            lambda: pjl_orjson.info("order_created", extra=FIELDS),
            sinks["pjl_orjson"],
        ),
    }
    # Warm up (caches, first-use binding) and show one line of each.
    for name, (call, sink) in contenders.items():
        _reset(sink)
        call()
        print(f"{name}:\n    {sink.getvalue().strip() or '(nothing written)'}")

    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(args.repeat):
        for name, (call, sink) in contenders.items():
            best[name] = min(best[name], measure(call, sink, args.calls))

    print(f"\nbest of {args.repeat} rounds x {args.calls} calls, microseconds per call:")
    for name, seconds in best.items():
        print(f"  {seconds * 1e6:8.3f}  {name}")
        results.absolute(name, seconds * 1e6, "µs/call", better="lower")

    kit_info = best["backend_kit info (JSON, 3 bound fields, redaction)"]
    ratios = [
        (
            "filtered debug, module-level logger / stdlib filtered debug",
            best["backend_kit debug, module-level logger (filtered out)"]
            / best["stdlib logging debug (filtered out)"],
            1.0,
        ),
        (
            "backend_kit info / stdlib + python-json-logger",
            kit_info / best["stdlib logging + python-json-logger"],
            0.5,
        ),
        (
            "backend_kit info / bare structlog JSON, same steps minus redaction",
            kit_info / best["bare structlog JSON, same steps minus redaction"],
            1.1,
        ),
    ]
    print("\nratios (target):")
    missed = 0
    for label, ratio, target in ratios:
        verdict = "ok" if ratio <= target else "MISSED"
        missed += ratio > target
        print(f"  {ratio:6.3f}  (<= {target:.3f})  {verdict}  {label}")
        results.ratio(label, ratio, target=target, better="lower")
    orjson_ratio = results.ratio(
        "backend_kit info / stdlib + python-json-logger (orjson)",
        kit_info / best["stdlib logging + python-json-logger (orjson)"],
        better="lower",
    )
    print(
        f"  (info only) backend_kit info / stdlib + python-json-logger (orjson): {orjson_ratio:.3f}"
    )
    results.write(args.json)
    if missed:
        print(f"\n{missed} target(s) missed")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
