"""What every framework adapter does around a request, written once.

An adapter translates its framework's request into these calls; nothing here knows a
framework: the inbound request id, the client address behind trusted proxies, the
health endpoints' paths, and the one ``request_finished`` event per request, which
also feeds the request metrics.
"""

from __future__ import annotations

import time

from . import _metric_hooks
from ._logging import get_logger
from ._settings import Settings
from .health import health_paths

__all__ = [
    "REQUEST_ID_HEADER",
    "RequestLogger",
    "client_address",
]

#: The header that carries the request id, inbound and echoed on every response.
REQUEST_ID_HEADER = "X-Request-ID"


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


class RequestLogger:
    """Emits the one ``request_finished`` event of each request.

    Level by status: 5xx error, 4xx warning, else info; health probes are logged at
    debug so a probe every few seconds does not drown the service's own lines.
    """

    __slots__ = ("_health_paths", "_log", "_metrics_path")

    def __init__(self, settings: Settings) -> None:
        paths = health_paths(settings)
        self._health_paths = paths.all()
        self._metrics_path = paths.metrics
        self._log = get_logger("backend_kit.request")

    def finished(
        self,
        *,
        method: str,
        route: str | None,
        path: str,
        status: int,
        started: float,
        client: str | None,
    ) -> None:
        """Log the end of a request that began at ``time.perf_counter()`` *started*, and
        count it in the request metrics (when enabled) under its route template *route*
        (``None`` when no route matched)."""
        seconds = time.perf_counter() - started
        duration_ms = round(seconds * 1000.0, 3)
        recorder = _metric_hooks.recorder
        if recorder is not None and path != self._metrics_path:
            if route is None and path in self._health_paths:
                route = path  # probes answered before the framework routes them
            recorder.request_finished(method, route, status, seconds)
        if path in self._health_paths:
            emit = self._log.debug
        elif status >= 500:
            emit = self._log.error
        elif status >= 400:
            emit = self._log.warning
        else:
            emit = self._log.info
        emit(
            "request_finished",
            method=method,
            route=route,
            path=path,
            status=status,
            duration_ms=duration_ms,
            client=client,
        )
