"""A trivial Flask app wired to backend_kit, with metrics on or off (``METRICS_ENABLED``
in the environment decides under gunicorn).

gunicorn -c python:backend_kit.gunicorn "apps.metrics_app:create_app()"
"""

from __future__ import annotations

from flask import Flask

from backend_kit import Settings, load_settings

BODY = {"status": "ok", "items": [1, 2, 3]}
#: Routes beside /hello, so a scrape has a realistic number of series to read.
EXTRA_ROUTES = 12


def create_app(*, metrics: bool | None = None) -> Flask:
    """``GET /hello`` with a small JSON body, plus ``/r0`` … ``/r11``; *metrics*
    overrides ``METRICS_ENABLED``."""
    from backend_kit.flask import init_app

    app = Flask("bench_metrics")

    @app.get("/hello")
    def hello() -> dict[str, object]:
        return BODY

    for number in range(EXTRA_ROUTES):
        app.add_url_rule(f"/r{number}", f"r{number}", lambda: BODY)
    init_app(app, settings=bench_settings(metrics))
    return app


def bench_settings(metrics: bool | None = None) -> Settings:
    """Request logging at info in JSON, as the other benchmarks, and the metrics."""
    values: dict[str, object] = {
        "service_name": "bench",
        "environment": "production",
        "log_level": "INFO",
        "log_format": "json",
        "metrics_token": "bench-scrape-token",
    }
    if metrics is not None:
        values["metrics_enabled"] = metrics
    return load_settings(**values)
