"""Two small Flask services for the propagation tests: ``front`` calls ``back`` through
backend_kit.http; both fail, so each sends one Sentry event."""

from __future__ import annotations

import os

from flask import Flask, request

from backend_kit import get_logger, http
from backend_kit.flask import init_app

app = init_app(Flask(os.environ.get("SERVICE_NAME", "svc")))
log = get_logger("svc")


@app.get("/front")
def front() -> tuple[str, int]:
    with http.client() as backend:
        answer = backend.get(os.environ["BACK_URL"] + "/back")
    log.info("front_called_back", back_status=answer.status_code)
    raise RuntimeError("front failed after calling back")


@app.get("/back")
def back() -> str:
    log.info(
        "back_received",
        seen_request_id=request.headers.get("X-Request-ID"),
        seen_traceparent=request.headers.get("traceparent"),
    )
    raise RuntimeError("back failed")
