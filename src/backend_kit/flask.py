"""Flask integration: ``init_app(app)``.

Each request gets a request context (the inbound ``X-Request-ID`` when it is safe,
else a new id), echoed in the ``X-Request-ID`` response header, errors and 404s
included, and one ``request_finished`` event. The health endpoints ``/livez``,
``/readyz``, ``/healthz`` and ``/startupz`` (and ``/metrics`` with ``METRICS_ENABLED``)
are answered around the app, before any of its ``before_request`` hooks run.

Examples:
    >>> from flask import Flask
    >>> from backend_kit.flask import init_app
    >>> app = init_app(Flask("billing"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeVar

try:
    from flask import Flask, Request
    from flask.ctx import _AppCtxGlobals
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('backend_kit.flask needs Flask: pip install "backend-kit[flask]"') from exc

from ._active import get_settings
from ._cache import CacheBackend, default_cache
from ._configure import configure
from ._context import current_request_id
from ._request_core import (
    REQUEST_ID_HEADER,
    RequestCore,
    builtin_health_registry,
    sentry_integrations,
)
from ._settings import Settings
from .health import HealthRegistry, HealthRunner

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from werkzeug.routing import Rule

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
    core: RequestCore


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
    configure(settings, sentry_integrations=sentry_integrations(settings, "flask"))
    registry = health if health is not None else builtin_health_registry(settings)
    runner = HealthRunner(registry, settings=settings)
    state = BackendKit(
        settings=settings,
        cache=default_cache(),
        health=registry,
        health_runner=runner,
        core=RequestCore(settings, runner),
    )
    app.extensions[EXTENSION_NAME] = state
    # Around Flask's own request handling, so the request id exists and probes are
    # answered before any hook of the app runs, and the id is still there when Flask
    # logs an unhandled exception.
    app.wsgi_app = _RequestCoreMiddleware(app.wsgi_app, state.core)  # type: ignore[method-assign]
    # ``g.request_id`` is read from the request context when asked for, and the route
    # recorded when Flask matches it: ``before_request`` hooks would cost every request.
    app.app_ctx_globals_class = _globals_with_request_id(app.app_ctx_globals_class)
    app.request_class = _request_class_recording_route(app.request_class)
    return app


class _RequestCoreMiddleware:
    """The WSGI layer of `init_app`: translates the environ and the response status to
    and from the request core.

    It reads the WSGI environ rather than Flask's request proxy: every proxy read is a
    context lookup, and this runs on every request. The event is emitted when Flask
    returns the response; a streamed body is not waited for.
    """

    __slots__ = ("_app", "_core")

    def __init__(self, app: WSGIApplication, core: RequestCore) -> None:
        self._app = app
        self._core = core

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        core = self._core
        active = core.start(
            environ.get(_REQUEST_ID_ENVIRON_KEY),
            traceparent=environ.get("HTTP_TRACEPARENT"),
            tracestate=environ.get("HTTP_TRACESTATE"),
        )
        extra_headers = core.response_headers(active, may_close=False)
        status = 500  # when the app raises instead of answering (PROPAGATE_EXCEPTIONS)
        path = _path(environ)
        method: str = environ.get("REQUEST_METHOD", "")

        def start_with_request_id(
            status_line: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            nonlocal status
            status = int(status_line[:3])
            return start_response(status_line, [*headers, *extra_headers], exc_info)

        try:
            probe = core.probe_for(path)
            if probe is None:
                return self._app(environ, start_with_request_id)
            answer = core.answer_probe(
                probe,
                method,
                environ.get("HTTP_AUTHORIZATION"),
                accept=environ.get("HTTP_ACCEPT"),
            )
            code = answer.status_code
            start_with_request_id(f"{code} {HTTPStatus(code).phrase}", [*answer.headers.items()])
            return [] if method == "HEAD" else [answer.body]
        finally:
            core.finish(
                active,
                method=method,
                route=environ.get(_ROUTE_ENVIRON_KEY),
                path=path,
                status=status,
                remote_address=environ.get("REMOTE_ADDR"),
                forwarded_for=environ.get("HTTP_X_FORWARDED_FOR"),
            )


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


def _globals_with_request_id(base: type[_AppCtxGlobals]) -> type[_AppCtxGlobals]:
    """*base* (the app's ``flask.g`` class) with ``request_id``: the current request id,
    unless the app set one itself."""

    class GlobalsWithRequestId(base):  # type: ignore[valid-type,misc]
        def __getattr__(self, name: str) -> Any:
            if name == "request_id":
                return current_request_id()
            return super().__getattr__(name)

        def get(self, name: str, default: Any = None) -> Any:
            if name == "request_id" and name not in self.__dict__:
                request_id = current_request_id()
                return default if request_id is None else request_id
            return super().get(name, default)

        def __contains__(self, item: str) -> bool:
            return item == "request_id" or super().__contains__(item)

    return GlobalsWithRequestId


def _request_class_recording_route(base: type[Request]) -> type[Request]:
    """*base* (the app's request class), handing the matched route to the WSGI layer:
    Flask drops its request object before that layer logs."""

    class RequestRecordingRoute(base):  # type: ignore[valid-type,misc]
        _matched_rule: Rule | None = None

        @property
        def url_rule(self) -> Rule | None:
            return self._matched_rule

        @url_rule.setter
        def url_rule(self, rule: Rule | None) -> None:
            self._matched_rule = rule
            if rule is not None:
                self.environ[_ROUTE_ENVIRON_KEY] = rule.rule

    return RequestRecordingRoute


def _path(environ: WSGIEnvironment) -> str:
    # WSGI carries the path as latin-1 code points of its UTF-8 bytes.
    raw: str = environ.get("PATH_INFO", "")
    if raw.isascii():  # the same either way, and most paths are
        return raw
    return raw.encode("latin-1", "replace").decode("utf-8", "replace")
