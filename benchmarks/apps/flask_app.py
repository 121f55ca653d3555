"""A trivial Flask app, bare or wired to backend_kit.

gunicorn "benchmarks.apps.flask_app:create_app(kit=False)"
gunicorn "benchmarks.apps.flask_app:create_app(kit=True)"
"""

from __future__ import annotations

from flask import Flask

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


def bench_settings() -> Settings:
    """The settings both benchmarked apps use: request logging at info, JSON lines."""
    return load_settings(
        service_name="bench", environment="production", log_level="INFO", log_format="json"
    )
