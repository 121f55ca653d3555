"""A Flask service for the metrics tests under gunicorn: a route, a cached call, a
retried call and a health check, each of which moves its metrics."""

from __future__ import annotations

import os

from flask import Flask

import backend_kit
from backend_kit.flask import extension, init_app
from backend_kit.health import HealthCheck

app = init_app(Flask("metrics_app"))
extension(app).health.add(HealthCheck(name="always", run=lambda: None))
_failures = {"left": 0}


@backend_kit.cached(ttl=60, namespace="prices")
def price(item: int) -> int:
    return item * 100


@backend_kit.retry(on=ConnectionError, attempts=3, wait_initial=0.0, wait_max=0.0)
def flaky() -> str:
    if _failures["left"] > 0:
        _failures["left"] -= 1
        raise ConnectionError("not yet")
    return "ok"


@app.get("/work")
def work() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.get("/items/<int:item>")
def item(item: int) -> dict[str, int]:
    return {"price": price(item), "pid": os.getpid()}


@app.get("/flaky/<int:failures>")
def flaky_route(failures: int) -> dict[str, str]:
    _failures["left"] = failures
    try:
        return {"result": flaky()}
    except ConnectionError:
        return {"result": "gave up"}
