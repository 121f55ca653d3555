"""The request context: a request id and other values bound to everything a request does.

One `contextvars.ContextVar` holds an immutable mapping, so the context follows the code
into threads started with `contextvars.copy_context()`, into asyncio tasks, and is
restored exactly when a `request_context()` block exits: nothing leaks into the next
request served by the same thread or event loop.
"""

from __future__ import annotations

import os
import re
import sys
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, suppress
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Any

from ._forksafe import after_fork_in_child
from ._trace import SPAN_ID_KEY, TRACE_ID_KEY, TraceContext, new_trace, otel_span_ids

__all__ = [
    "REQUEST_ID_KEY",
    "RequestContext",
    "bind_context",
    "current_context",
    "current_request_id",
    "current_trace",
    "is_safe_request_id",
    "new_request_id",
    "request_context",
]

#: The key under which the request id appears in log lines and Sentry tags.
REQUEST_ID_KEY = "request_id"
#: Context keys of a running background task, also set as Sentry tags.
TASK_TAG_KEYS = ("task_id", "task_name")

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("backend_kit_request_context", default=_EMPTY)
# The full trace (parent span, flags, tracestate) lives beside the mapping: only its two
# ids belong on every log line.
_trace: ContextVar[TraceContext | None] = ContextVar("backend_kit_trace_context", default=None)

# Inbound ids end up in log lines, headers and Sentry tags: only short, inert ones are kept.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# All-zero ids are invalid in W3C trace context.
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

#: Called with the request id when a `request_context()` block is entered; Sentry uses it
#: to tag the running transaction. Kept as a list so the hot path is one truth test.
enter_hooks: list[Callable[[str], None]] = []

#: Attribute set on an exception leaving a `request_context()` block, so an error
#: reported after the block has exited still carries the id of the request that raised it.
EXCEPTION_REQUEST_ID_ATTRIBUTE = "__backend_kit_request_id__"


def new_request_id() -> str:
    """A fresh random request id: 32 lowercase hex digits."""
    return os.urandom(16).hex()


def is_safe_request_id(value: object) -> bool:
    """True when *value* is at most 128 characters of ``A-Za-z0-9._:-``."""
    return isinstance(value, str) and _SAFE_REQUEST_ID.fullmatch(value) is not None


class RequestContext:
    """What `request_context` returns. A class rather than a generator: it is entered
    and left on every request's path, where a generator's machinery is measurable."""

    __slots__ = ("_request_id", "_token", "_trace_token", "_traceparent", "_tracestate", "_values")

    def __init__(
        self,
        request_id: str | None,
        traceparent: str | None,
        tracestate: str | None,
        values: dict[str, Any],
    ) -> None:
        self._request_id = request_id
        self._traceparent = traceparent
        self._tracestate = tracestate
        self._values = values
        self._token: Token[Mapping[str, Any]] | None = None
        self._trace_token: Token[TraceContext | None] | None = None

    def __enter__(self) -> str:
        parent = _context.get()
        request_id = self._request_id
        traceparent = self._traceparent
        tracestate = self._tracestate
        trace = _trace.get()
        fresh_trace = trace is None or traceparent is not None or tracestate is not None
        if request_id is None:
            inherited = parent.get(REQUEST_ID_KEY)
            if isinstance(inherited, str):
                request_id = inherited
        elif not isinstance(request_id, str) or _SAFE_REQUEST_ID.fullmatch(request_id) is None:
            request_id = None
        ids = otel_span_ids() if fresh_trace and _otel_loaded() else None
        if fresh_trace and traceparent is None and ids is None:
            # The common case (no inbound trace, no OpenTelemetry span running): the new
            # trace, and the request id unless one came in, from the pool made ahead.
            # OpenTelemetry imported without a span (redis-py 8 imports it whenever its
            # SDK is installed) still takes this path.
            fresh_id, trace = _fresh_request_and_trace()
            if request_id is None:
                request_id = fresh_id
        else:
            if request_id is None:
                request_id = new_request_id()
            if fresh_trace:
                trace = _start_trace(traceparent, tracestate, ids)
        assert trace is not None
        self._request_id = request_id
        trace_token = _trace.set(trace)
        if parent or self._values:
            values = {**parent, **self._values}
            values[REQUEST_ID_KEY] = request_id
            values[TRACE_ID_KEY] = trace.trace_id
            values[SPAN_ID_KEY] = trace.span_id
        else:
            values = {REQUEST_ID_KEY: request_id, TRACE_ID_KEY: trace[0], SPAN_ID_KEY: trace[1]}
        token = _context.set(MappingProxyType(values))
        self._token = token
        self._trace_token = trace_token
        if enter_hooks:
            try:
                for hook in enter_hooks:
                    hook(request_id)
            except BaseException:
                _context.reset(token)
                _trace.reset(trace_token)
                self._token = self._trace_token = None
                raise
        return request_id

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and enter_hooks and not hasattr(exc, EXCEPTION_REQUEST_ID_ATTRIBUTE):
            with suppress(AttributeError, TypeError):  # exotic exception types refuse it
                setattr(exc, EXCEPTION_REQUEST_ID_ATTRIBUTE, self._request_id)
        if self._token is not None:
            _context.reset(self._token)
            self._token = None
        if self._trace_token is not None:
            _trace.reset(self._trace_token)
            self._trace_token = None


def _otel_loaded() -> bool:
    return "opentelemetry.trace" in sys.modules


# Ids for new requests, made ahead in batches: one ``os.urandom`` call serves
# `_FRESH_BATCH` requests (a system call per request is measurable). ``popleft`` is
# atomic, so threads never share an entry; a forked child empties the pool, so it never
# repeats its parent's ids.
_FRESH_BATCH = 64
_fresh_ids: deque[tuple[str, str, str]] = deque()


def _fill_fresh_ids() -> None:
    digits = os.urandom(40 * _FRESH_BATCH).hex()
    _fresh_ids.extend(
        (digits[at : at + 32], digits[at + 32 : at + 64], digits[at + 64 : at + 80])
        for at in range(0, len(digits), 80)
    )


@after_fork_in_child
def _forget_fresh_ids() -> None:
    _fresh_ids.clear()


def _fresh_request_and_trace() -> tuple[str, TraceContext]:
    """A new request id and a new trace (no parent)."""
    try:
        request_id, trace_id, span_id = _fresh_ids.popleft()
    except IndexError:
        _fill_fresh_ids()
        return _fresh_request_and_trace()
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return request_id, new_trace()
    return request_id, tuple.__new__(TraceContext, (trace_id, span_id, None, "00", ""))


def _start_trace(
    traceparent: str | None, tracestate: str | None, ids: tuple[str, str, str] | None
) -> TraceContext:
    # An OpenTelemetry span already running (its middleware outside ours; *ids*, from
    # `otel_span_ids`) is the trace.
    if ids is None:
        return new_trace(traceparent, tracestate)
    inbound = new_trace(traceparent, tracestate)
    same_trace = inbound.trace_id == ids[0]
    return TraceContext(
        ids[0],
        ids[1],
        inbound.parent_span_id if same_trace else None,
        ids[2],
        inbound.tracestate if same_trace else "",
    )


def request_context(
    request_id: str | None = None,
    *,
    traceparent: str | None = None,
    tracestate: str | None = None,
    **values: Any,
) -> AbstractContextManager[str]:
    """Bind a request id, a trace and *values* to every log line and Sentry event inside
    the block.

    *request_id* is usually the inbound ``X-Request-ID`` header: it is kept when it is at
    most 128 characters of ``A-Za-z0-9._:-`` and replaced by a fresh id otherwise (too
    long, empty, newlines, quotes, control characters). With ``None``, the id of an
    enclosing context is kept, else a fresh one is made. Values of an enclosing context
    are inherited; *values* win. Gives the request id in force. On exit the previous
    context is restored exactly. Each returned object is entered once.

    *traceparent* and *tracestate* are the inbound W3C trace context headers. A valid
    ``traceparent`` is continued (same ``trace_id``, a new ``span_id`` for this
    service); an invalid or missing one starts a new trace, so every block has a
    ``trace_id`` and a ``span_id`` in its log lines. With neither header, the trace of
    an enclosing block is kept.

    Examples:
        >>> with request_context("abc-123", user_id=42) as request_id:
        ...     request_id, current_context()["user_id"]
        ('abc-123', 42)
    """
    return RequestContext(request_id, traceparent, tracestate, values)


def bind_context(**values: Any) -> None:
    """Add *values* to the current context (for example a user id known after
    authentication). Inside a `request_context()` block they are dropped when the
    block exits; outside one they stay for the rest of the current thread or task.

    Raises `ValueError` when asked to change ``request_id``: open a new
    `request_context()` instead.
    """
    if REQUEST_ID_KEY in values or TRACE_ID_KEY in values or SPAN_ID_KEY in values:
        raise ValueError(
            "bind_context() cannot change the request id or the trace; use "
            "`with backend_kit.request_context(request_id=..., traceparent=...)` instead"
        )
    _context.set(MappingProxyType({**_context.get(), **values}))


def current_request_id() -> str | None:
    """The id of the request being served, or ``None`` outside any `request_context()`."""
    value = _context.get().get(REQUEST_ID_KEY)
    return value if isinstance(value, str) else None


def current_trace() -> TraceContext | None:
    """The W3C trace of the current block (ids, flags, ``tracestate``), or ``None``
    outside any `request_context()`."""
    return _trace.get()


def current_context() -> Mapping[str, Any]:
    """A read-only view of every value bound to the current context (request id included)."""
    return _context.get()


def get_context_mapping() -> Mapping[str, Any]:
    """The raw bound mapping; the logging hot path reads it without a copy."""
    return _context.get()
