"""The floor under backend_kit's per-request cost: one ``request_finished`` line with
the same fields, written with nothing but ``orjson.dumps`` and one write and flush.

Measured two ways in each request benchmark's run: in a tight loop
(`orjson_line_microseconds`, printed for reference), and inside real requests of the
same framework, as the time a minimal adapter that writes only that line
(``apps/orjson_line.py``) adds to the bare app. The benchmarks fail when the time
backend_kit adds exceeds ``LIMIT`` times the in-request floor: like is compared with
like, framework code running between two lines in both.
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


#: Below this, the in-request floor is lost in the noise of the two rates it is the
#: difference of; the check then falls back to the tight-loop figure, and says so.
MEASURABLE_US = 1.0


def report_added(
    added_us: float, tight_us: float, in_request_us: float, *, indent: str = ""
) -> bool:
    """Print backend_kit's added time next to both orjson floors, and the verdict on
    the in-request floor (the tight-loop one when that is not measurable); True
    within `LIMIT`."""
    print(
        f"{indent}(info) the same line with orjson alone, tight loop: {tight_us:.1f} µs; "
        f"backend_kit's added time / that: {added_us / tight_us:.2f}"
    )
    print(
        f"{indent}(info) the same line with orjson alone, added inside a request by a minimal "
        f"adapter: {in_request_us:.1f} µs"
    )
    if in_request_us >= MEASURABLE_US:
        floor_us, which = in_request_us, "in-request orjson floor"
    else:
        floor_us, which = (
            tight_us,
            "tight-loop orjson floor (the in-request one was not measurable)",
        )
    ratio = added_us / floor_us
    verdict = "ok" if ratio <= LIMIT else "MISSED"
    print(
        f"{indent}time backend_kit adds per request: {added_us:.1f} µs; "
        f"{which}: {floor_us:.1f} µs; ratio {ratio:.2f}  (<= {LIMIT:.1f})  {verdict}"
    )
    return ratio <= LIMIT
