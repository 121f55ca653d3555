"""Flask integration: ``init_app(app)``.

Each request gets a request context (the inbound ``X-Request-ID`` when it is safe,
else a new id), echoed in the ``X-Request-ID`` response header, errors and 404s
included, and one ``request_finished`` event. The health endpoints ``/livez``,
``/readyz``, ``/healthz`` and ``/startupz`` are served from a blueprint.

Examples:
    >>> from flask import Flask
    >>> from backend_kit.flask import init_app
    >>> app = init_app(Flask("billing"))  # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

try:
    from flask import Blueprint, Flask, Response, g, request
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('backend_kit.flask needs Flask: pip install "backend-kit[flask]"') from exc

from ._cache import CacheBackend, default_cache
from ._configure import configure
from ._context import current_request_id, request_context
from ._requests import REQUEST_ID_HEADER, RequestLogger, client_address
from ._settings import Settings, get_settings
from .health import HealthRegistry, HealthRunner, checks_from_settings, health_paths

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["BackendKit", "extension", "init_app"]

FlaskT = TypeVar("FlaskT", bound=Flask)

EXTENSION_NAME = "backend_kit"

_REQUEST_ID_ENVIRON_KEY = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")
_ROUTE_ENVIRON_KEY = "backend_kit.route"


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
    # Around Flask's own request handling, so the request id exists before any hook of
    # the app runs and is still there when Flask logs an unhandled exception.
    app.wsgi_app = _RequestObserver(app.wsgi_app, state)  # type: ignore[method-assign]
    app.before_request_funcs.setdefault(None, []).insert(0, _expose_request_id)
    app.register_blueprint(_health_blueprint(state))
    return app


class _RequestObserver:
    """The WSGI layer of `init_app`: request context, ``X-Request-ID`` on every
    response and one ``request_finished`` event.

    It reads the WSGI environ rather than Flask's request proxy: every proxy read is a
    context lookup, and this runs on every request. The event is emitted when Flask
    returns the response; a streamed body is not waited for.
    """

    __slots__ = ("_app", "_logger", "_trusted_proxies")

    def __init__(self, app: WSGIApplication, state: BackendKit) -> None:
        self._app = app
        self._logger = state.request_logger
        self._trusted_proxies = state.settings.trusted_proxies

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        context = request_context(environ.get(_REQUEST_ID_ENVIRON_KEY))
        request_id = context.__enter__()
        status = 500  # when the app raises instead of answering (PROPAGATE_EXCEPTIONS)

        def start_with_request_id(
            status_line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            nonlocal status
            status = int(status_line[:3])
            return start_response(
                status_line, [*headers, (REQUEST_ID_HEADER, request_id)], exc_info
            )

        try:
            return self._app(environ, start_with_request_id)
        finally:
            # Leaving the context must not depend on the log call before it: a context
            # left behind would lend this request's id to the thread's next request.
            try:
                self._logger.finished(
                    method=environ.get("REQUEST_METHOD", ""),
                    route=environ.get(_ROUTE_ENVIRON_KEY),
                    path=_path(environ),
                    status=status,
                    started=started,
                    client=client_address(
                        environ.get("REMOTE_ADDR"),
                        environ.get("HTTP_X_FORWARDED_FOR"),
                        self._trusted_proxies,
                    ),
                )
            finally:
                context.__exit__(*sys.exc_info())


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


def _expose_request_id() -> None:
    """Put the request id on ``flask.g``, and hand the matched route to the WSGI layer
    (Flask drops its request object before that layer logs)."""
    g.request_id = current_request_id()
    current = request._get_current_object()  # type: ignore[attr-defined]
    rule = current.url_rule
    if rule is not None:
        current.environ[_ROUTE_ENVIRON_KEY] = rule.rule


def _path(environ: WSGIEnvironment) -> str:
    # WSGI carries the path as latin-1 code points of its UTF-8 bytes.
    raw: str = environ.get("PATH_INFO", "")
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")


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
    if state.settings.metrics_enabled:
        from .metrics import respond as respond_metrics

        def metrics() -> Response:
            answer = respond_metrics(
                request.headers.get("Authorization"), request.headers.get("Accept"), state.settings
            )
            return Response(answer.body, status=answer.status_code, headers=answer.headers)

        blueprint.add_url_rule(paths.metrics, "metrics", metrics, methods=["GET"])
    return blueprint
