"""The in-request floor: the cheapest adapter we know how to write that logs the same
``request_finished`` line as backend_kit, for each framework.

It writes the line's fields (timestamp, level, event, logger, service, environment,
method, route, path, status, duration, client, and a fresh request id, trace id and
span id) with ``orjson.dumps`` and one write and flush to ``STREAM`` (``sys.stdout``
when None, as under gunicorn). No context, no redaction, no level check, no response
header, no route lookup (the path stands in for the route): what backend_kit adds to a
request is compared with what this adds to the same request.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, TextIO

import orjson

#: Where the lines go; None: ``sys.stdout`` at the time of the write.
STREAM: TextIO | None = None


def write_line(
    method: str, route: str | None, path: str, status: int, started: float, client: str | None
) -> None:
    """Build the request's line and write it, as a hand-written adapter would."""
    line = {
        "timestamp": datetime.now(timezone.utc),
        "level": "info",
        "event": "request_finished",
        "logger": "backend_kit.request",
        "service": "bench",
        "environment": "production",
        "method": method,
        "route": route,
        "path": path,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
        "client": client,
        "request_id": os.urandom(16).hex(),
        "trace_id": os.urandom(16).hex(),
        "span_id": os.urandom(8).hex(),
    }
    stream = STREAM if STREAM is not None else sys.stdout
    stream.write(orjson.dumps(line).decode() + "\n")
    stream.flush()


class OrjsonLineWSGIMiddleware:
    """A WSGI middleware writing the line once the app has returned its response."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        started = time.perf_counter()
        status = 500

        def recording_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = int(status_line[:3])
            return start_response(status_line, headers, exc_info)

        path = environ.get("PATH_INFO", "")
        try:
            return self._app(environ, recording_start_response)
        finally:
            write_line(
                environ.get("REQUEST_METHOD", ""),
                path,
                path,
                status,
                started,
                environ.get("REMOTE_ADDR"),
            )


class OrjsonLineDjangoMiddleware:
    """A new-style Django middleware writing the line after the view's response."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        started = time.perf_counter()
        response = self.get_response(request)
        path = request.path
        write_line(
            request.method,
            path,
            path,
            response.status_code,
            started,
            request.META.get("REMOTE_ADDR"),
        )
        return response
