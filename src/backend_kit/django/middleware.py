"""``backend_kit.django.middleware.RequestContextMiddleware``: put it first in
``MIDDLEWARE``.

For every request: a request context (the inbound ``X-Request-ID`` when it is safe,
else a new id), ``request.request_id``, the ``X-Request-ID`` response header, and one
``request_finished`` event. Health probes are answered here, before any later
middleware (authentication, redirects, host checks) can turn them away.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async

from backend_kit._context import request_context
from backend_kit._requests import REQUEST_ID_HEADER, client_address

from ._state import state
from .views import health_view_for_path

__all__ = ["RequestContextMiddleware"]

Handler = Callable[[Any], Any]

# Read from META directly: the first access to ``request.headers`` builds a mapping of
# every header, a cost each request would pay for the one header needed here.
_REQUEST_ID_META_KEY = "HTTP_" + REQUEST_ID_HEADER.upper().replace("-", "_")


class RequestContextMiddleware:
    """Binds each request to its own request context, sync or async."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self._async:
            return self._acall(request)
        started = time.perf_counter()
        with request_context(
            request.META.get(_REQUEST_ID_META_KEY),
            traceparent=request.META.get("HTTP_TRACEPARENT"),
            tracestate=request.META.get("HTTP_TRACESTATE"),
        ) as request_id:
            request.request_id = request_id
            health_view = health_view_for_path(request.path_info)
            response = health_view(request) if health_view else self.get_response(request)
            return self._finish(request, response, request_id, started)

    async def _acall(self, request: Any) -> Any:
        started = time.perf_counter()
        with request_context(
            request.META.get(_REQUEST_ID_META_KEY),
            traceparent=request.META.get("HTTP_TRACEPARENT"),
            tracestate=request.META.get("HTTP_TRACESTATE"),
        ) as request_id:
            request.request_id = request_id
            health_view = health_view_for_path(request.path_info)
            if health_view is not None:
                # Probes may block on a hung check up to its timeout: not on the loop.
                response = await sync_to_async(health_view, thread_sensitive=False)(request)
            else:
                get_response: Callable[[Any], Awaitable[Any]] = self.get_response
                response = await get_response(request)
            return self._finish(request, response, request_id, started)

    @staticmethod
    def _finish(request: Any, response: Any, request_id: str, started: float) -> Any:
        response[REQUEST_ID_HEADER] = request_id
        # `request_finished` says it all: Django's own "Not Found: /x" line would repeat
        # it after the request context is gone, without the request id. (An unhandled
        # exception was already logged, with its traceback, inside the context.)
        response._has_been_logged = True
        current = state()
        match = getattr(request, "resolver_match", None)
        current.request_logger.finished(
            method=request.method,
            route=getattr(match, "route", None) or None,
            path=request.path,
            status=response.status_code,
            started=started,
            client=client_address(
                request.META.get("REMOTE_ADDR"),
                request.META.get("HTTP_X_FORWARDED_FOR"),
                current.settings.trusted_proxies,
            ),
        )
        return response
