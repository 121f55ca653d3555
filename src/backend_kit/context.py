"""Carry the current context (request id, bound values) into threads and messages.

A new thread starts with an empty context on regular CPython builds, and with a copy of
its starter's context on free-threaded 3.14 builds. Everything here copies the context
explicitly, so code behaves the same on both: a thread or executor job started through
`run_with_context`, `submit_with_context` or `start_thread` sees the request id and the
values bound where it was started, and what it binds stays in its own copy.

`inject_context` and `extract_context` carry the context across a process boundary in
message headers (Celery tasks, outbound requests). Each kind of context has one
propagator: the request id travels as ``x-request-id``; a trace context will travel as
``traceparent`` by adding one more propagator, without changing any caller.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping, MutableMapping
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

from ._context import REQUEST_ID_KEY, current_request_id, is_safe_request_id

__all__ = [
    "REQUEST_ID_HEADER",
    "extract_context",
    "inject_context",
    "run_with_context",
    "start_thread",
    "submit_with_context",
    "with_current_context",
]

P = ParamSpec("P")
R = TypeVar("R")

#: The header that carries the request id in task messages and outbound calls.
REQUEST_ID_HEADER = "x-request-id"


def with_current_context(function: Callable[P, R]) -> Callable[P, R]:
    """*function* bound to a copy of the context as it is now: wherever and whenever
    the result is called (another thread, a callback), it runs in that copy.

    Examples:
        >>> from backend_kit import request_context, current_request_id
        >>> with request_context("req-1"):
        ...     later = with_current_context(current_request_id)
        >>> later()
        'req-1'
    """
    captured = contextvars.copy_context()

    def run_in_captured(*args: P.args, **kwargs: P.kwargs) -> R:
        # A copy per call: a Context can be entered by one thread at a time, and two
        # calls must not see each other's bindings.
        return captured.copy().run(function, *args, **kwargs)

    return run_in_captured


def run_with_context(function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Call *function* in a copy of the current context and give its result; what it
    binds does not leak back into the caller."""
    return contextvars.copy_context().run(function, *args, **kwargs)


def submit_with_context(
    executor: Executor, function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> Future[R]:
    """``executor.submit(function, ...)`` with the job running in a copy of the caller's
    context. Gives the executor's future.

    Examples:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> from backend_kit import request_context, current_request_id
        >>> with ThreadPoolExecutor(1) as pool, request_context("req-2"):
        ...     submit_with_context(pool, current_request_id).result(timeout=5)
        'req-2'
    """
    context = contextvars.copy_context()

    def job() -> R:
        return context.run(function, *args, **kwargs)

    return executor.submit(job)


def start_thread(
    function: Callable[..., object],
    /,
    *args: Any,
    name: str | None = None,
    daemon: bool = True,
    **kwargs: Any,
) -> threading.Thread:
    """Start a thread running *function* in a copy of the caller's context; gives the
    started thread. Raises `RuntimeError` when the interpreter cannot start one."""
    thread = threading.Thread(
        target=contextvars.copy_context().run,
        args=(function, *args),
        kwargs=kwargs,
        name=name,
        daemon=daemon,
    )
    thread.start()
    return thread


# --- headers -------------------------------------------------------------------------


class _RequestIdPropagator:
    """The request id as ``x-request-id``; an unsafe inbound value is ignored."""

    def inject(self, headers: MutableMapping[str, Any]) -> None:
        request_id = current_request_id()
        if request_id is not None:
            headers[REQUEST_ID_HEADER] = request_id

    def extract(self, headers: Mapping[str, Any], into: dict[str, Any]) -> None:
        value = headers.get(REQUEST_ID_HEADER)
        if is_safe_request_id(value):
            into[REQUEST_ID_KEY] = value


# The trace context joins this tuple as a second propagator (``traceparent``).
_PROPAGATORS = (_RequestIdPropagator(),)


def inject_context(headers: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Write the current context into *headers* (a message's or a request's) and give
    them back. Outside any request context nothing is written.

    Examples:
        >>> from backend_kit import request_context
        >>> with request_context("req-3"):
        ...     inject_context({})
        {'x-request-id': 'req-3'}
    """
    for propagator in _PROPAGATORS:
        propagator.inject(headers)
    return headers


def extract_context(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Read what `inject_context` wrote: the keyword arguments for
    `backend_kit.request_context` (``{"request_id": ...}``), empty when *headers* carry
    nothing usable. Unsafe values (too long, control characters) are dropped.

    Examples:
        >>> extract_context({"x-request-id": "req-3"})
        {'request_id': 'req-3'}
    """
    found: dict[str, Any] = {}
    if headers:
        for propagator in _PROPAGATORS:
            propagator.extract(headers, found)
    return found
