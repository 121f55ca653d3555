"""Flask integration: ``init_app(app)``.

>>> from flask import Flask
>>> from backend_kit.flask import init_app
>>> app = init_app(Flask("billing"))  # doctest: +SKIP

Each request gets a request context (the inbound ``X-Request-ID`` when it is safe,
else a new id), echoed in the ``X-Request-ID`` response header, errors and 404s
included, and one ``request_finished`` event. The health endpoints ``/livez``,
``/readyz`` and ``/healthz`` are served from a blueprint.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, TypeVar

try:
    from flask import Blueprint, Flask, Response, g, request
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('backend_kit.flask needs Flask: pip install "backend-kit[flask]"') from exc

from ._cache import CacheBackend, default_cache
from ._configure import configure
from ._context import request_context
from ._requests import REQUEST_ID_HEADER, RequestLogger, client_address
from ._settings import Settings, get_settings
from .health import HealthRegistry, HealthRunner, checks_from_settings, health_paths

__all__ = ["BackendKit", "init_app"]

FlaskT = TypeVar("FlaskT", bound=Flask)

EXTENSION_NAME = "backend_kit"

_REQUEST_ID_ENVIRON_KEY = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")


@dataclass(frozen=True)
class BackendKit:
    """What `init_app` stores in ``app.extensions["backend_kit"]``."""

    settings: Settings
    cache: CacheBackend
    health: HealthRegistry
    health_runner: HealthRunner
    request_logger: RequestLogger


def init_app(
    app: FlaskT, *, settings: Settings | None = None, health: HealthRegistry | None = None
) -> FlaskT:
    """Wire *app* to backend_kit and return it (the same object, its type kept).

    *settings* default to the active settings (loaded from the environment if none were
    configured). Logging and Sentry (with sentry-sdk's Flask integration) are configured
    from them. *health* is the registry the readiness probe runs; by default the
    built-in checks implied by ``DATABASE_URL`` and ``CACHE_URL``: add your own with
    ``backend_kit.flask.extension(app).health.add(...)``.

    Calling it again on the same app changes nothing.
    """
    if EXTENSION_NAME in app.extensions:
        return app
    settings = settings if settings is not None else get_settings()
    configure(settings, sentry_integrations=_sentry_integrations(settings))
    cache = default_cache()
    registry = health if health is not None else checks_from_settings(settings, cache_backend=cache)
    state = BackendKit(
        settings=settings,
        cache=cache,
        health=registry,
        health_runner=HealthRunner(registry, settings=settings),
        request_logger=RequestLogger(settings),
    )
    app.extensions[EXTENSION_NAME] = state
    trusted_proxies = settings.trusted_proxies

    # Registered first, so the request id exists before any other hook of the app runs.
    app.before_request_funcs.setdefault(None, []).insert(0, _enter_request)

    @app.after_request
    def _finish_request(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id is not None:
            response.headers[REQUEST_ID_HEADER] = request_id
        started = g.get("_backend_kit_started")
        if started is not None:
            # Every read through the `request` proxy is a context lookup: resolve it once.
            current = request._get_current_object()  # type: ignore[attr-defined]
            rule = current.url_rule
            environ = current.environ
            state.request_logger.finished(
                method=current.method,
                route=rule.rule if rule is not None else None,
                path=current.path,
                status=response.status_code,
                started=started,
                client=client_address(
                    environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"), trusted_proxies
                ),
            )
        return response

    app.teardown_request(_leave_request)
    app.register_blueprint(_health_blueprint(state))
    return app


def extension(app: Flask) -> BackendKit:
    """The backend_kit state of *app*; raises `RuntimeError` before `init_app`."""
    try:
        state = app.extensions[EXTENSION_NAME]
    except KeyError:
        raise RuntimeError(
            f"backend_kit is not initialised on {app.name!r}: call backend_kit.flask.init_app(app)"
        ) from None
    assert isinstance(state, BackendKit)
    return state


def _sentry_integrations(settings: Settings) -> list[Any]:
    if settings.sentry_dsn is None:
        return []  # sentry_sdk is not even imported
    from sentry_sdk.integrations.flask import FlaskIntegration

    return [FlaskIntegration()]


def _enter_request() -> None:
    g._backend_kit_started = time.perf_counter()
    # The WSGI environ directly: cheaper than `request.headers` on every request.
    context = request_context(request.environ.get(_REQUEST_ID_ENVIRON_KEY))
    g.request_id = context.__enter__()
    g._backend_kit_context = context


def _leave_request(_: BaseException | None) -> None:
    context: AbstractContextManager[str] | None = g.pop("_backend_kit_context", None)
    if context is not None:
        context.__exit__(None, None, None)


def _health_blueprint(state: BackendKit) -> Blueprint:
    paths = health_paths(state.settings)
    blueprint = Blueprint("backend_kit_health", __name__)
    runner = state.health_runner

    def respond(probe: str) -> Response:
        answer = runner.respond(probe, request.headers.get("Authorization"))  # type: ignore[arg-type]
        return Response(answer.body, status=answer.status_code, headers=answer.headers)

    blueprint.add_url_rule(paths.live, "livez", lambda: respond("live"), methods=["GET", "HEAD"])
    blueprint.add_url_rule(paths.ready, "readyz", lambda: respond("ready"), methods=["GET", "HEAD"])
    blueprint.add_url_rule(
        paths.report, "healthz", lambda: respond("report"), methods=["GET", "HEAD"]
    )
    blueprint.add_url_rule(
        paths.startup, "startupz", lambda: respond("startup"), methods=["GET", "HEAD"]
    )
    return blueprint
