"""What every framework adapter does around a request, written once.

An adapter translates its framework's request into `RequestCore.start`, an optional
`RequestCore.answer_probe`, `RequestCore.response_headers` and `RequestCore.finish`;
nothing here knows a framework. The core owns:

- the inbound request id (validated by `request_context`) and the context's lifetime;
- the client address behind ``TRUSTED_PROXIES``;
- probe dispatch: the health paths (and ``METRICS_PATH`` with ``METRICS_ENABLED``)
  are answered before any of the app's own code;
- the one ``request_finished`` event per request, which also feeds the request metrics;
- the response headers: ``X-Request-ID``, and ``Connection: close`` while draining
  for servers that let the app close the connection;
- the readiness checks every adapter runs (`builtin_health_registry`) and the
  Sentry integration of each framework (`sentry_integrations`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Any, Literal

from . import _metric_hooks
from ._context import RequestContext
from ._logging import EventWriter
from ._settings import Settings
from .health import HealthHTTPResponse, HealthRegistry, HealthRunner, checks_from_settings
from .health import health_paths as _health_paths
from .health._lifecycle import is_draining

__all__ = [
    "REQUEST_ID_HEADER",
    "ActiveRequest",
    "Probe",
    "RequestCore",
    "builtin_health_registry",
    "client_address",
    "sentry_integrations",
]

#: The header that carries the request id, inbound and echoed on every response.
REQUEST_ID_HEADER = "X-Request-ID"

Probe = Literal["live", "ready", "report", "startup", "metrics"]
Framework = Literal["flask", "django", "asgi"]

_PROBE_METHODS = frozenset(("GET", "HEAD"))
# The request context binds no values of its own (it is read, never written).
_NO_VALUES: dict[str, Any] = {}
_METRICS_METHODS = frozenset(("GET",))


def client_address(
    remote_address: str | None, forwarded_for: str | None, trusted_proxies: int
) -> str | None:
    """The client's address: the peer itself, or, behind *trusted_proxies* proxies
    that each append to ``X-Forwarded-For``, the address the outermost of them saw.

    Entries a client wrote itself are never believed: only the last *trusted_proxies*
    hops were added by infrastructure we run.

    Examples:
        >>> client_address("10.0.0.5", "203.0.113.7, 10.0.0.9", 2)
        '203.0.113.7'
        >>> client_address("10.0.0.5", "spoofed, 203.0.113.7", 1)
        '203.0.113.7'
    """
    if trusted_proxies <= 0 or not forwarded_for:
        return remote_address
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    if len(hops) < trusted_proxies:
        return remote_address
    return hops[-trusted_proxies]


def builtin_health_registry(settings: Settings) -> HealthRegistry:
    """The readiness checks the settings imply (``DATABASE_URL``, ``CACHE_URL``): the
    same set for every adapter and for ``backend-kit health``. An in-process cache is
    not checked: it cannot be unreachable."""
    return checks_from_settings(settings)


def sentry_integrations(settings: Settings, framework: Framework) -> list[Any]:
    """The sentry-sdk integrations an adapter adds for *framework*; nothing (and no
    import of sentry_sdk) without a ``SENTRY_DSN``. ASGI needs none of its own:
    sentry-sdk enables its Starlette and FastAPI integrations when they are installed."""
    if settings.sentry_dsn is None:
        return []
    if framework == "flask":
        from sentry_sdk.integrations.flask import FlaskIntegration

        return [FlaskIntegration()]
    if framework == "django":
        from sentry_sdk.integrations.django import DjangoIntegration

        return [DjangoIntegration()]
    return []


class ActiveRequest(RequestContext):
    """One request between `RequestCore.start` and `RequestCore.finish`: its request
    context (entered by `start`, left by `finish`), its id and when it started."""

    __slots__ = ("request_id", "started")

    request_id: str
    started: float


class RequestCore:
    """Everything around one request that is not the framework's: built once per app
    from the settings and the health runner."""

    __slots__ = (
        "_line",
        "_metrics_path",
        "_probes",
        "_trusted_proxies",
        "health_runner",
        "settings",
    )

    def __init__(self, settings: Settings, health_runner: HealthRunner) -> None:
        self.settings = settings
        self.health_runner = health_runner
        paths = _health_paths(settings)
        self._probes: dict[str, Probe] = {
            paths.live: "live",
            paths.ready: "ready",
            paths.report: "report",
            paths.startup: "startup",
        }
        # Served, and kept out of the request metrics, only with METRICS_ENABLED: without
        # it the path is the app's own.
        self._metrics_path: str | None = None
        if settings.metrics_enabled:
            self._metrics_path = paths.metrics
            self._probes[paths.metrics] = "metrics"
        self._trusted_proxies = settings.trusted_proxies
        self._line = EventWriter("backend_kit.request")

    def start(
        self,
        inbound_request_id: str | None,
        *,
        traceparent: str | None = None,
        tracestate: str | None = None,
    ) -> ActiveRequest:
        """Enter the request's context: the inbound ``X-Request-ID`` when it is safe,
        else a fresh id, and the inbound W3C trace context when it is valid, else a new
        trace. Every `start` must be paired with one `finish`."""
        active = ActiveRequest(inbound_request_id, traceparent, tracestate, _NO_VALUES)
        active.started = time.perf_counter()
        active.request_id = active.__enter__()
        return active

    def probe_for(self, path: str) -> Probe | None:
        """The probe served at *path* (``"metrics"`` for ``METRICS_PATH`` with
        ``METRICS_ENABLED``), or ``None`` for the app's own paths."""
        return self._probes.get(path)

    def answer_probe(
        self,
        probe: Probe,
        method: str,
        authorization: str | None,
        *,
        accept: str | None = None,
    ) -> HealthHTTPResponse:
        """The probe's HTTP answer; 405 for a method other than GET and HEAD (GET only
        for the metrics, whose format follows *accept*, the ``Accept`` header). May
        block up to the health check timeout: an async adapter runs it off the event
        loop."""
        if probe == "metrics":
            if method not in _METRICS_METHODS:
                return HealthHTTPResponse(status_code=405, headers={"Allow": "GET"}, body=b"")
            from .metrics import respond as respond_metrics  # prometheus_client only now

            return respond_metrics(authorization, accept, self.settings)
        if method not in _PROBE_METHODS:
            return HealthHTTPResponse(status_code=405, headers={"Allow": "GET, HEAD"}, body=b"")
        return self.health_runner.respond(probe, authorization)

    @staticmethod
    def response_headers(request: ActiveRequest, *, may_close: bool) -> list[tuple[str, str]]:
        """The headers to add to the response. With *may_close* (servers where the
        app's ``Connection`` header is honoured, such as ASGI servers), ``Connection:
        close`` while the process drains, so kept-alive clients reconnect elsewhere.
        WSGI forbids that header: gunicorn's ``pre_request`` hook closes instead."""
        if may_close and is_draining():
            return [(REQUEST_ID_HEADER, request.request_id), ("Connection", "close")]
        return [(REQUEST_ID_HEADER, request.request_id)]

    def finish(
        self,
        request: ActiveRequest,
        *,
        method: str,
        route: str | None,
        path: str,
        status: int,
        remote_address: str | None,
        forwarded_for: str | None,
    ) -> None:
        """Emit the one ``request_finished`` event, count the request in the request
        metrics (when enabled; the scrape itself is not counted) under its route
        template *route* (``None`` when no route matched; a probe's path), and leave the
        request's context.

        The context is left even if the log call fails: a context left behind would
        lend this request's id to the thread's next request. Level by status: 5xx
        error, 4xx warning, else info; probes at debug, so a probe every few seconds
        does not drown the service's own lines.
        """
        try:
            seconds = time.perf_counter() - request.started
            probe = path in self._probes
            recorder = _metric_hooks.recorder
            if recorder is not None and path != self._metrics_path:
                # Telemetry never costs the request its log line: a failing metrics
                # update is skipped (prometheus_client raises only on misuse).
                with contextlib.suppress(Exception):
                    # Probes are answered before the framework routes them.
                    recorder.request_finished(
                        method, path if probe and route is None else route, status, seconds
                    )
            if probe:
                method_name, level = "debug", logging.DEBUG
            elif status >= 500:
                method_name, level = "error", logging.ERROR
            elif status >= 400:
                method_name, level = "warning", logging.WARNING
            else:
                method_name, level = "info", logging.INFO
            line = self._line
            if line.enabled(level):
                trusted = self._trusted_proxies
                line.write(
                    method_name,
                    level,
                    "request_finished",
                    {
                        "method": method,
                        "route": route,
                        "path": path,
                        "status": status,
                        "duration_ms": round(seconds * 1000.0, 3),
                        "client": remote_address
                        if trusted <= 0 or not forwarded_for
                        else client_address(remote_address, forwarded_for, trusted),
                    },
                )
        finally:
            request.__exit__(*sys.exc_info())
