"""A trivial Flask app, bare or wired to backend_kit.

gunicorn "benchmarks.apps.flask_app:create_app(kit=False)"
gunicorn "benchmarks.apps.flask_app:create_app(kit=True)"
gunicorn "benchmarks.apps.flask_app:create_orjson_floor_app()"
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog
from flask import Flask, Response, g, request

from backend_kit import Settings, load_settings

BODY = {"status": "ok", "items": [1, 2, 3]}


def create_app(*, kit: bool) -> Flask:
    """One route, ``GET /hello``, returning a small JSON body; with *kit*, the same app
    after `backend_kit.flask.init_app` (request logging at info, JSON, to stdout)."""
    app = Flask("bench_kit" if kit else "bench_bare")

    @app.get("/hello")
    def hello() -> dict[str, object]:
        return BODY

    if kit:
        from backend_kit.flask import init_app

        init_app(app, settings=bench_settings())
    return app


def create_orjson_floor_app() -> Flask:
    """The bare app inside a WSGI middleware that writes the same request line with
    orjson alone (`apps.orjson_line`): the in-request floor for backend_kit's cost."""
    from .orjson_line import OrjsonLineWSGIMiddleware

    app = create_app(kit=False)
    app.wsgi_app = OrjsonLineWSGIMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    return app


def bench_settings() -> Settings:
    """The settings both benchmarked apps use: request logging at info, JSON lines."""
    return load_settings(
        service_name="bench", environment="production", log_level="INFO", log_format="json"
    )


def create_hand_logged_app(stream: TextIO) -> Flask:
    """The same route with request logging written by hand on plain structlog: a request
    id, the ``X-Request-ID`` header and one JSON line per request with the same fields,
    without redaction. What a service does without backend_kit; the raw-library
    reference for the adapter's cost."""
    log = structlog.wrap_logger(
        structlog.PrintLogger(stream),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=lambda d, **_: orjson.dumps(d).decode()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )

    def write(fields: dict[str, Any]) -> None:
        log.info("request_finished", **fields)

    return _app_logging_requests_with("bench_hand", write)


def create_orjson_logged_app(stream: TextIO) -> Flask:
    """The same route with the cheapest request log line we know how to write: one dict
    of the same fields, ``orjson.dumps``, one write and flush per request. No structlog,
    no redaction, no level check: the floor under any JSON request logging."""

    def write(fields: dict[str, Any]) -> None:
        line = {"timestamp": time.time(), "level": "info", "event": "request_finished"}
        stream.write(orjson.dumps({**line, **fields}).decode() + "\n")
        stream.flush()

    return _app_logging_requests_with("bench_orjson", write)


def _app_logging_requests_with(name: str, write: Callable[[dict[str, Any]], None]) -> Flask:
    """The route, a request id, the ``X-Request-ID`` header, and *write* called with the
    fields of each request's line."""
    app = Flask(name)

    @app.get("/hello")
    def hello() -> dict[str, object]:
        return BODY

    @app.before_request
    def start() -> None:
        g.started = time.perf_counter()
        g.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex

    @app.after_request
    def finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.request_id
        write(
            {
                "method": request.method,
                "route": request.url_rule.rule if request.url_rule else None,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.perf_counter() - g.started) * 1000, 3),
                "client": request.remote_addr,
                "request_id": g.request_id,
            }
        )
        return response

    return app
