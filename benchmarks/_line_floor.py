"""The floor under backend_kit's per-request cost: one ``request_finished`` line with
the same fields, written with nothing but ``orjson.dumps`` and one write and flush.

The request benchmarks print the time backend_kit adds to a request next to this
figure, measured in the same run, and fail when the first exceeds ``LIMIT`` times
the second.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

import orjson

#: backend_kit's added time per request may be at most this many orjson lines.
LIMIT = 2.0


def orjson_line_microseconds(*, lines: int = 20_000, repeat: int = 5) -> float:
    """The best time, in µs, to build and write one request line with orjson alone."""
    stream = open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            for _ in range(lines):
                line = {
                    "timestamp": datetime.now(timezone.utc),
                    "level": "info",
                    "event": "request_finished",
                    "logger": "backend_kit.request",
                    "service": "bench",
                    "environment": "production",
                    "method": "GET",
                    "route": "/hello",
                    "path": "/hello",
                    "status": 200,
                    "duration_ms": 0.123,
                    "client": "127.0.0.1",
                    "request_id": os.urandom(16).hex(),
                }
                stream.write(orjson.dumps(line).decode() + "\n")
                stream.flush()
            best = min(best, (time.perf_counter() - started) / lines * 1e6)
        return best
    finally:
        stream.close()


def report_added(added_us: float, floor_us: float) -> bool:
    """Print backend_kit's added time next to the orjson floor; True within `LIMIT`."""
    ratio = added_us / floor_us
    verdict = "ok" if ratio <= LIMIT else "MISSED"
    print(
        f"time backend_kit adds per request: {added_us:.1f} µs; the same line with orjson "
        f"alone: {floor_us:.1f} µs; ratio {ratio:.2f}  (<= {LIMIT:.1f})  {verdict}"
    )
    return ratio <= LIMIT
