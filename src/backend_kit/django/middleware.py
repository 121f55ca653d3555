"""``backend_kit.django.middleware.RequestContextMiddleware``: put it first in
``MIDDLEWARE``.

It translates Django's request and response to and from the request core: a request
context (the inbound ``X-Request-ID`` when it is safe, else a new id),
``request.request_id``, the ``X-Request-ID`` response header, and one
``request_finished`` event. Health probes (and the metrics) are answered here, before any later
middleware (authentication, redirects, host checks) can turn them away.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpResponse

from backend_kit._request_core import REQUEST_ID_HEADER, ActiveRequest, Probe, RequestCore

from ._state import state

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
        core = state().core
        active = _start(core, request)
        response = None
        try:
            probe = core.probe_for(request.path_info)
            if probe is None:
                response = self.get_response(request)
            else:
                response = _answer_probe(core, probe, request)
            return _with_headers(response, active)
        finally:
            _finish(core, active, request, response)

    async def _acall(self, request: Any) -> Any:
        core = state().core
        active = _start(core, request)
        response = None
        try:
            probe = core.probe_for(request.path_info)
            if probe is None:
                get_response: Callable[[Any], Awaitable[Any]] = self.get_response
                response = await get_response(request)
            else:
                # Probes may block on a hung check up to its timeout: not on the loop.
                answer_probe = sync_to_async(_answer_probe, thread_sensitive=False)
                response = await answer_probe(core, probe, request)
            return _with_headers(response, active)
        finally:
            _finish(core, active, request, response)


def _start(core: RequestCore, request: Any) -> ActiveRequest:
    meta = request.META
    active = core.start(
        meta.get(_REQUEST_ID_META_KEY),
        traceparent=meta.get("HTTP_TRACEPARENT"),
        tracestate=meta.get("HTTP_TRACESTATE"),
    )
    request.request_id = active.request_id
    return active


def _answer_probe(core: RequestCore, probe: Probe, request: Any) -> HttpResponse:
    meta = request.META
    answer = core.answer_probe(
        probe, request.method, meta.get("HTTP_AUTHORIZATION"), accept=meta.get("HTTP_ACCEPT")
    )
    return HttpResponse(answer.body, status=answer.status_code, headers=answer.headers)


def _with_headers(response: Any, active: ActiveRequest) -> Any:
    for name, value in RequestCore.response_headers(active, may_close=False):
        response[name] = value
    # `request_finished` says it all: Django's own "Not Found: /x" line would repeat it
    # after the request context is gone, without the request id. (An unhandled
    # exception was already logged, with its traceback, inside the context.)
    response._has_been_logged = True
    return response


def _finish(core: RequestCore, active: ActiveRequest, request: Any, response: Any) -> None:
    match = getattr(request, "resolver_match", None)
    core.finish(
        active,
        method=request.method,
        route=getattr(match, "route", None) or None,
        path=request.path,
        status=response.status_code if response is not None else 500,
        remote_address=request.META.get("REMOTE_ADDR"),
        forwarded_for=request.META.get("HTTP_X_FORWARDED_FOR"),
    )
