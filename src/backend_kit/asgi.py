"""ASGI integration: ``BackendKitMiddleware`` for Starlette, FastAPI or any ASGI app.

A pure ASGI middleware (no framework imported): each HTTP request gets a request
context (the inbound ``X-Request-ID`` when it is safe, else a new id), echoed in the
``X-Request-ID`` response header, and one ``request_finished`` event. The health
endpoints are answered before the app sees the request, so no app-wide dependency or
middleware of its own can turn a probe away. While the process drains, responses carry
``Connection: close``.

Examples:
    >>> from fastapi import FastAPI  # doctest: +SKIP
    >>> from backend_kit.asgi import BackendKitMiddleware
    >>> app = FastAPI()  # doctest: +SKIP
    >>> app.add_middleware(BackendKitMiddleware)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from ._active import get_settings
from ._configure import configure
from ._request_core import (
    REQUEST_ID_HEADER,
    RequestCore,
    builtin_health_registry,
    sentry_integrations,
)
from ._settings import Settings
from .health import HealthRegistry, HealthRunner
from .health._lifecycle import install_sigterm_handler

__all__ = ["BackendKitMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")


class BackendKitMiddleware:
    """Wrap *app*: ``app.add_middleware(BackendKitMiddleware)`` in Starlette and FastAPI,
    or ``BackendKitMiddleware(app)`` for any ASGI app.

    *settings* default to the active settings (loaded from the environment if none
    were configured); logging and Sentry are configured from them when the middleware
    is built. *health* is the registry the readiness probe runs; by default the checks
    implied by ``DATABASE_URL`` and ``CACHE_URL`` (the `health` attribute: add your own
    checks to it). Probes run their checks on a worker thread, off the event loop.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings | None = None,
        health: HealthRegistry | None = None,
    ) -> None:
        settings = settings if settings is not None else get_settings()
        configure(settings, sentry_integrations=sentry_integrations(settings, "asgi"))
        self.app = app
        self.settings = settings
        self.health = health if health is not None else builtin_health_registry(settings)
        self.health_runner = HealthRunner(self.health, settings=settings)
        self.core = RequestCore(settings, self.health_runner)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                # Readiness fails from SIGTERM on; the server's own handler (installed
                # before the lifespan starts) still runs its graceful shutdown.
                install_sigterm_handler()
            await self.app(scope, receive, send)
            return
        core = self.core
        request_id = authorization = accept = forwarded_for = traceparent = tracestate = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_KEY:
                request_id = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded_for = value.decode("latin-1")
            elif name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"tracestate":
                tracestate = value.decode("latin-1")
        active = core.start(request_id, traceparent=traceparent, tracestate=tracestate)
        status = 500  # when the app raises before answering
        path: str = scope["path"]
        method: str = scope["method"]

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in core.response_headers(active, may_close=True)
                ]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            probe = core.probe_for(path)
            if probe is None:
                await self.app(scope, receive, send_with_headers)
            else:
                answer = await asyncio.to_thread(
                    core.answer_probe, probe, method, authorization, accept=accept
                )
                headers = [
                    (k.lower().encode("latin-1"), v.encode()) for k, v in answer.headers.items()
                ]
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": answer.status_code,
                        "headers": headers,
                    }
                )
                body = b"" if method == "HEAD" else answer.body
                await send_with_headers({"type": "http.response.body", "body": body})
        finally:
            client = scope.get("client")
            core.finish(
                active,
                method=method,
                route=_route(scope),
                path=path,
                status=status,
                remote_address=client[0] if client else None,
                forwarded_for=forwarded_for,
            )


def _route(scope: Scope) -> str | None:
    # Starlette and FastAPI put the matched route in the scope once routing ran.
    route = scope.get("route")
    template = getattr(route, "path", None)
    return template if isinstance(template, str) else None
