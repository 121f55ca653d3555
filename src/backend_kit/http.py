"""Outbound HTTP with the kit's practice built in: `client()` and `async_client()` give
httpx clients, `session()` a requests session, each a normal object of its library.

Every call made through them:

- carries ``X-Request-ID`` and a W3C ``traceparent`` (a new child span id of the
  current trace) with the current ``tracestate``;
- has connect and read timeouts (``HTTP_CONNECT_TIMEOUT``, ``HTTP_READ_TIMEOUT``);
- is retried, for idempotent methods only unless told otherwise (or when the request
  has an ``Idempotency-Key`` header), on connect errors, timeouts, 429, 502, 503 and
  504, honouring ``Retry-After`` within ``HTTP_RETRY_TIMEOUT``, by the same policy
  as `backend_kit.retry`;
- spends a per-host retry budget: retries add at most ``HTTP_RETRY_BUDGET`` of extra
  load over ``HTTP_RETRY_BUDGET_WINDOW`` seconds;
- goes through a per-host circuit breaker;
- logs one ``http_request`` event: method, redacted URL, status, duration, attempts.
  Headers are never logged.

httpx and requests are imported only by the function that needs them:
``pip install "backend-kit[http]"``.
"""

from __future__ import annotations

import email.utils
import logging
import math
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Collection, Iterator, MutableMapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeAlias

from . import _metric_hooks
from ._active import get_redactor
from ._breaker import (
    CircuitBreaker,
    CircuitOpenError,
    SecondsWindow,
    circuit_breaker,
    forget_hooks,
)
from ._context import current_request_id, current_trace
from ._forksafe import after_fork_in_child
from ._redact import Redactor
from ._retry import RetryPolicy, _Run
from ._trace import TRACEPARENT_HEADER, TRACESTATE_HEADER, child_traceparent, new_trace

if TYPE_CHECKING:
    import httpx
    import requests

    from ._logging import EventWriter
    from ._settings import Settings

__all__ = [
    "IDEMPOTENT_METHODS",
    "RETRY_STATUSES",
    "CircuitOpenError",
    "RetryBudget",
    "async_client",
    "client",
    "session",
]

#: Methods retried by default: repeating them does not change the result (RFC 9110).
IDEMPOTENT_METHODS: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
#: Response statuses that are retried (with ``Retry-After`` honoured when present).
RETRY_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})

_REQUEST_ID_HEADER = "X-Request-ID"
_LOGGER_NAME = "backend_kit.http"
_NO_HEADERS: frozenset[str] = frozenset()
# The headers looked for on a request, lower-cased, as text (requests) and bytes (httpx).
_HeaderNames: TypeAlias = "tuple[str, str, str, str] | tuple[bytes, bytes, bytes, bytes]"
_TEXT_NAMES = (TRACEPARENT_HEADER, TRACESTATE_HEADER, "x-request-id", "idempotency-key")
_BYTES_NAMES = (b"traceparent", b"tracestate", b"x-request-id", b"idempotency-key")
# Retries a host may always get per window, so a quiet service can still retry at all.
_BUDGET_FLOOR = 3


def _install_hint(package: str) -> ImportError:
    return ImportError(f"backend_kit.http needs {package}: pip install 'backend-kit[http]'")


# -- per-host state: retry budget and circuit breaker ---------------------------------


class RetryBudget:
    """Retries to one host may add at most *ratio* of extra load over *window* seconds
    (plus a floor of a few retries per window). Counts per process: each process caps
    its own extra load, so the service as a whole stays within the same share."""

    def __init__(self, host: str, ratio: float, window: float) -> None:
        self.host = host
        self.ratio = ratio
        self.window = window
        self._lock = threading.Lock()
        self._counts = SecondsWindow(window)  # [requests, retries] per second
        self._denied = 0
        self._logged_at = -math.inf

    def record_request(self) -> None:
        with self._lock:
            self._counts.current()[0] += 1

    def try_spend(self) -> bool:
        """True, and the retry counted, when the budget allows one more retry."""
        with self._lock:
            requests, retries = self._counts.totals()
            if retries < _BUDGET_FLOOR + self.ratio * requests:
                self._counts.current()[1] += 1
                return True
            self._denied += 1
            recorder = _metric_hooks.recorder
            if recorder is not None:
                recorder.retry_budget_refused(self.host)  # never raises
            now = time.monotonic()
            if now - self._logged_at < self.window:
                return False
            denied, self._denied, self._logged_at = self._denied, 0, now
        _logger().warning(
            "retry_budget_exhausted",
            host=self.host,
            budget=self.ratio,
            window=self.window,
            requests=requests,
            retries=retries,
            denied=denied,
        )
        return False

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()


class _HostState:
    """What one client applies to one host: the host's retry budget (shared by every
    client of the process) and the breaker chosen for it."""

    __slots__ = ("breaker", "budget")

    def __init__(self, breaker: CircuitBreaker | None, budget: RetryBudget) -> None:
        self.breaker = breaker
        self.budget = budget


# One retry budget per host, and one default breaker per host, for the whole process.
_budgets: dict[str, RetryBudget] = {}
_default_breakers: dict[str, CircuitBreaker] = {}
_hosts_lock = threading.Lock()
# Every client's own table of hosts, emptied with the process-wide ones.
_outbounds: weakref.WeakSet[_Outbound] = weakref.WeakSet()


def _host_state(host: str, breaker: CircuitBreaker | bool | None, settings: Settings) -> _HostState:
    with _hosts_lock:
        budget = _budgets.get(host)
        if budget is None:
            budget = _budgets[host] = RetryBudget(
                host, settings.http_retry_budget, settings.http_retry_budget_window
            )
        if breaker is False:
            chosen: CircuitBreaker | None = None
        elif isinstance(breaker, CircuitBreaker):
            chosen = breaker
        else:
            chosen = _default_breakers.get(host)
            if chosen is None:
                chosen = _default_breakers[host] = circuit_breaker(
                    f"http:{host}",
                    failures=settings.http_breaker_failures,
                    recovery_timeout=settings.http_breaker_recovery_timeout,
                )
    return _HostState(chosen, budget)


def _forget_hosts() -> None:
    with _hosts_lock:
        _budgets.clear()
        _default_breakers.clear()
        for outbound in list(_outbounds):
            outbound.forget_hosts()


forget_hooks.append(_forget_hosts)


@after_fork_in_child
def _reset_after_fork() -> None:
    global _hosts_lock
    _hosts_lock = threading.Lock()
    for budget in _budgets.values():
        budget._reset_after_fork()


# -- one call: headers, attempts, decisions, the event ---------------------------------


class _AttemptFailed(Exception):
    """One failed attempt, with the decision about retrying it already taken."""

    def __init__(self, decision: bool | float, error: BaseException | None, response: Any) -> None:
        self.decision = decision
        self.error = error
        self.response = response
        what = f"HTTP {response_status(response)}" if response is not None else repr(error)
        super().__init__(what)


def response_status(response: Any) -> int:
    return int(getattr(response, "status_code", 0))


def _retry_on(exc: Exception) -> bool | float:
    return exc.decision if isinstance(exc, _AttemptFailed) else False


def _outbound_headers() -> dict[str, str]:
    """The headers every outbound call carries: the request id (inside a request) and
    the trace context with a new child span id."""
    trace = current_trace() or new_trace()
    headers = {TRACEPARENT_HEADER: child_traceparent(trace)}
    if trace.tracestate:
        headers[TRACESTATE_HEADER] = trace.tracestate
    request_id = current_request_id()
    if request_id is not None:
        headers[_REQUEST_ID_HEADER] = request_id
    return headers


def _retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value or len(value) > 64:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# Hosts one client remembers before it starts its table again (a client calling
# an unbounded set of hosts must not grow without limit).
_MAX_REMEMBERED_HOSTS = 1024


class _Outbound:
    """What one client, async client or session applies to each of its calls.

    The transports only translate: they find the host's state in `hosts` (`add_host`
    the first time), `prepare` adds the headers, `send` (or `send_async`) makes the
    attempts and writes the event. The first attempt runs inline; the retry machinery
    is set up only after a failure."""

    __slots__ = (
        "__weakref__",
        "breaker",
        "hosts",
        "never_sent",
        "policy",
        "retry_methods",
        "settings",
        "transient",
    )

    def __init__(
        self,
        settings: Settings,
        retry_methods: Collection[str] | None,
        breaker: CircuitBreaker | bool | None,
        attempts: int | None,
        transient: tuple[type[BaseException], ...],
        never_sent: Callable[[BaseException], bool],
    ) -> None:
        self.settings = settings
        self.retry_methods = (
            IDEMPOTENT_METHODS
            if retry_methods is None
            else frozenset(method.upper() for method in retry_methods)
        )
        self.breaker = breaker
        self.policy = RetryPolicy(
            on=_retry_on,
            attempts=settings.http_retry_attempts if attempts is None else attempts,
            timeout=settings.http_retry_timeout,
            wait_initial=0.1,
            wait_max=5.0,
            wait_jitter=0.2,
        )
        # The errors worth a retry, and which of them say the request never left.
        self.transient = transient
        self.never_sent = never_sent
        # Keyed by what the transport reads cheaply off the URL (see the transports).
        self.hosts: dict[Any, _HostState] = {}
        with _hosts_lock:
            _outbounds.add(self)

    def forget_hosts(self) -> None:
        self.hosts = {}

    def add_host(self, key: Any, host: str) -> _HostState:
        """Remember the state of *host* (``host`` or ``host:port``) under the key a
        transport reads off its URLs (``hosts.get(key)`` finds it from then on)."""
        state = _host_state(host, self.breaker, self.settings)
        hosts = self.hosts
        if len(hosts) >= _MAX_REMEMBERED_HOSTS:
            hosts = self.hosts = {}
        hosts[key] = state
        return state

    def prepare(
        self,
        method: str,
        state: _HostState,
        headers: MutableMapping[str, Any],
        present: Collection[Any],
        names: _HeaderNames,
    ) -> bool:
        """Add the propagation headers the caller did not set and count the call in the
        host's budget; True when the call may be retried. *present* holds the names
        already on the request, lower-cased, in the type of *names* (the lower-cased
        ``traceparent``, ``tracestate``, ``x-request-id``, ``idempotency-key``)."""
        trace = current_trace() or new_trace()
        # A header set by the caller (or an instrumentation's traceparent) wins.
        if names[0] not in present:
            headers[TRACEPARENT_HEADER] = child_traceparent(trace)
        if trace.tracestate and names[1] not in present:
            headers[TRACESTATE_HEADER] = trace.tracestate
        request_id = current_request_id()
        if request_id is not None and names[2] not in present:
            headers[_REQUEST_ID_HEADER] = request_id
        state.budget.record_request()
        return method in self.retry_methods or names[3] in present

    # -- the attempts ---------------------------------------------------------------

    def send(
        self,
        send: Callable[..., Any],
        request: Any,
        kwargs: dict[str, Any],
        method: str,
        url: str,
        state: _HostState,
        retryable: bool,
        started: float,
    ) -> Any:
        """``send(request, **kwargs)`` with the breaker, the retries and the event."""
        retries: _Retries | None = None
        try:
            breaker = state.breaker
            if breaker is not None:
                breaker.allow()
            try:
                response = send(request, **kwargs)
            except self.transient as error:
                failure = self.judge_error(state, retryable, 1, error)
            else:
                judged = self.judge_response(state, retryable, 1, response)
                if judged is None:  # the answer
                    self.finish(method, url, started, 1, response.status_code, None)
                    return response
                failure = judged
            retries = _Retries(self, state, retryable, started, failure)
            with _reraise_original():
                response = retries.run(send, request, kwargs)
        except BaseException as error:
            self.finish(
                method, url, started, 1 if retries is None else retries.attempts, None, error
            )
            raise
        self.finish(method, url, started, retries.attempts, response.status_code, None)
        return response

    async def send_async(
        self,
        send: Callable[[Any], Awaitable[Any]],
        request: Any,
        method: str,
        url: str,
        state: _HostState,
        retryable: bool,
        started: float,
    ) -> Any:
        """The ``async`` counterpart of `send`."""
        retries: _Retries | None = None
        try:
            breaker = state.breaker
            if breaker is not None:
                breaker.allow()
            try:
                response = await send(request)
            except self.transient as error:
                failure = self.judge_error(state, retryable, 1, error)
            else:
                judged = self.judge_response(state, retryable, 1, response)
                if judged is None:  # the answer
                    self.finish(method, url, started, 1, response.status_code, None)
                    return response
                failure = judged
            retries = _Retries(self, state, retryable, started, failure)
            with _reraise_original():
                response = await retries.run_async(send, request)
        except BaseException as error:
            self.finish(
                method, url, started, 1 if retries is None else retries.attempts, None, error
            )
            raise
        self.finish(method, url, started, retries.attempts, response.status_code, None)
        return response

    # -- decisions ------------------------------------------------------------------

    def judge_response(
        self, state: _HostState, retryable: bool, attempt: int, response: Any
    ) -> _AttemptFailed | None:
        """None when *response* is the answer; else the failed attempt and whether
        (or after how long) to retry it."""
        status = response.status_code
        if state.breaker is not None:
            state.breaker.record(status < 500)
        if status not in RETRY_STATUSES:
            return None
        decision: bool | float = self._decide(state, retryable, attempt)
        if decision is not False:
            wait = _retry_after(response.headers.get("Retry-After"))
            if wait is not None:
                decision = wait
        return _AttemptFailed(decision, None, response)

    def judge_error(
        self, state: _HostState, retryable: bool, attempt: int, error: BaseException
    ) -> _AttemptFailed:
        """The failed attempt for a transient *error*: retried when the method allows
        it or when the request never left."""
        if state.breaker is not None:
            state.breaker.record(False)
        retryable = retryable or self.never_sent(error)
        failed = _AttemptFailed(self._decide(state, retryable, attempt), error, None)
        failed.__cause__ = error
        return failed

    def _decide(self, state: _HostState, retryable: bool, attempt: int) -> bool:
        if not retryable or attempt >= self.policy._max_attempts():
            return False
        return state.budget.try_spend()

    # -- the event ------------------------------------------------------------------

    def finish(
        self,
        method: str,
        url: str,
        started: float,
        attempts: int,
        status: int | None,
        error: BaseException | None,
    ) -> None:
        """Log the one ``http_request`` event: warning for an error or a 5xx answer,
        info otherwise. Only the URL's credentials and query can hold a secret of the
        URL's own kind, so only such a URL goes through the redaction policy here
        (memoised per string by the Redactor); the logging pipeline still runs the
        whole policy over every field of the event."""
        try:
            if error is None and (status is None or status < 500):
                method_name, level = "info", logging.INFO
            else:
                method_name, level = "warning", logging.WARNING
            line = _direct_line()
            if line is not None and not line.enabled(level):
                return  # below every logger's level: no fields to build
            if "?" in url or "@" in url:
                url = _redactor().redact_text(url)
            fields: dict[str, Any] = {
                "method": method,
                "url": url,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000.0, 3),
                "attempts": attempts,
            }
            if error is not None:
                fields["error_type"] = type(error).__name__
                fields["error"] = _redactor().redact_text(str(error))
            if line is not None:
                line.write(method_name, level, "http_request", fields)
            else:
                getattr(_logger(), method_name)("http_request", **fields)
        except Exception:  # noqa: S110 - a log call never hurts the call it describes
            pass


class _Retries:
    """The attempts after a first one that failed: tenacity, set up by the call's
    `RetryPolicy`, with the first failure replayed into it (see `backend_kit.retry`)."""

    __slots__ = ("attempts", "first", "outbound", "retryable", "started", "state")

    def __init__(
        self,
        outbound: _Outbound,
        state: _HostState,
        retryable: bool,
        started: float,
        first: _AttemptFailed,
    ) -> None:
        self.outbound = outbound
        self.state = state
        self.retryable = retryable
        # The retry deadline counts from the first attempt, on the policy's clock.
        self.started = time.monotonic() - (time.perf_counter() - started)
        self.first = first
        self.attempts = 1

    def _run(self) -> _Run | None:
        """tenacity's run, or None when the first failure is not retried."""
        policy = self.outbound.policy
        decision = policy._decide(self.first)
        if decision is False or policy._max_attempts() == 1:
            return None
        return _Run(policy, _LOGGER_NAME, self.started, self.first, decision)

    def run(self, send: Callable[..., Any], request: Any, kwargs: dict[str, Any]) -> Any:
        outbound, state, retryable = self.outbound, self.state, self.retryable
        response = self.first.response
        try:
            run = self._run()
            if run is None:
                raise self.first
            for manager in run.managers():
                with manager:
                    number = self.attempts = self.attempts + 1
                    if response is not None:  # the answer being retried
                        response.close()
                        response = None
                    if state.breaker is not None:
                        state.breaker.allow()
                    try:
                        response = send(request, **kwargs)
                    except outbound.transient as error:
                        raise outbound.judge_error(state, retryable, number, error) from error
                    failed = outbound.judge_response(state, retryable, number, response)
                    if failed is not None:
                        raise failed
        except _AttemptFailed as failed:
            if failed.response is None:
                raise
            response = failed.response
        return response

    async def run_async(self, send: Callable[[Any], Awaitable[Any]], request: Any) -> Any:
        outbound, state, retryable = self.outbound, self.state, self.retryable
        response = self.first.response
        try:
            run = self._run()
            if run is None:
                raise self.first
            async for manager in run.async_managers():
                with manager:
                    number = self.attempts = self.attempts + 1
                    if response is not None:  # the answer being retried
                        await response.aclose()
                        response = None
                    if state.breaker is not None:
                        state.breaker.allow()
                    try:
                        response = await send(request)
                    except outbound.transient as error:
                        raise outbound.judge_error(state, retryable, number, error) from error
                    failed = outbound.judge_response(state, retryable, number, response)
                    if failed is not None:
                        raise failed
        except _AttemptFailed as failed:
            if failed.response is None:
                raise
            response = failed.response
        return response


_log: Any = None
_writer: EventWriter | None = None
_kit_logging: Any = None  # backend_kit._logging, imported on first use


def _kit_logging_module() -> Any:
    global _kit_logging
    if _kit_logging is None:
        from . import _logging

        _kit_logging = _logging
    return _kit_logging


def _logger() -> Any:
    """The ``backend_kit.http`` logger: the kit's own (which needs no lookup of the
    configuration per call) while the kit's logging is configured, structlog's
    otherwise, so an application's own structlog configuration is followed."""
    global _log
    kit_logging = _kit_logging_module()
    if kit_logging.is_logging_configured():
        if _log is None:
            _log = kit_logging.get_logger(_LOGGER_NAME)
        return _log
    import structlog

    return structlog.get_logger(_LOGGER_NAME)


def _direct_line() -> EventWriter | None:
    """The writer of the ``http_request`` event while the kit's logging is configured:
    the pipeline's steps without structlog's dispatch, the same line as `_logger`'s
    (it takes the ordinary path itself for any pipeline but the default one). None
    otherwise: `_logger` then gives structlog's logger, so an application's own
    structlog configuration is followed."""
    global _writer
    kit_logging = _kit_logging or _kit_logging_module()
    if not kit_logging.is_logging_configured():
        return None
    if _writer is None:
        _writer = kit_logging.EventWriter(_LOGGER_NAME)
    return _writer


def _redactor() -> Redactor:
    try:
        return get_redactor()
    except Exception:  # invalid settings must not cost the call its event
        return Redactor()


def _settings(settings: Settings | None) -> Settings:
    if settings is not None:
        return settings
    from ._active import get_settings

    return get_settings()


def _host_key(scheme: str, host: str, port: int | None) -> str:
    default = 443 if scheme == "https" else 80
    return host if port in (None, default) else f"{host}:{port}"


@contextmanager
def _reraise_original() -> Iterator[None]:
    try:
        yield
    except _AttemptFailed as failed:
        if failed.error is not None:
            raise failed.error.with_traceback(failed.error.__traceback__) from None
        raise


# -- httpx --------------------------------------------------------------------------------


def _httpx_transport_classes() -> tuple[type[Any], type[Any]]:
    try:
        import httpx
    except ImportError:
        raise _install_hint("httpx") from None

    def prepare(outbound: _Outbound, request: httpx.Request) -> tuple[str, _HostState, bool]:
        url = request.url
        # httpx drops a scheme's default port, so (host, port) names the host.
        key = (url.host, url.port)
        state = outbound.hosts.get(key) or outbound.add_host(
            key, _host_key(url.scheme, url.host, url.port)
        )
        headers = request.headers
        # The raw names: keys() would first work out the headers' text encoding.
        present = {name.lower() for name, _ in headers.raw}
        retryable = outbound.prepare(request.method, state, headers, present, _BYTES_NAMES)
        return str(url), state, retryable

    class KitTransport(httpx.BaseTransport):
        def __init__(self, inner: httpx.BaseTransport, outbound: _Outbound) -> None:
            self._inner = inner
            self._send = inner.handle_request
            self._outbound = outbound

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            started = time.perf_counter()
            outbound = self._outbound
            url, state, retryable = prepare(outbound, request)
            response: httpx.Response = outbound.send(
                self._send, request, _NO_KWARGS, request.method, url, state, retryable, started
            )
            return response

        def close(self) -> None:
            self._inner.close()

    class AsyncKitTransport(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport, outbound: _Outbound) -> None:
            self._inner = inner
            self._send = inner.handle_async_request
            self._outbound = outbound

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            started = time.perf_counter()
            outbound = self._outbound
            url, state, retryable = prepare(outbound, request)
            response: httpx.Response = await outbound.send_async(
                self._send, request, request.method, url, state, retryable, started
            )
            return response

        async def aclose(self) -> None:
            await self._inner.aclose()

    return KitTransport, AsyncKitTransport


_NO_KWARGS: dict[str, Any] = {}
_transport_classes: tuple[type[Any], type[Any]] | None = None


def _transports() -> tuple[type[Any], type[Any]]:
    global _transport_classes
    if _transport_classes is None:
        _transport_classes = _httpx_transport_classes()
    return _transport_classes


def _httpx_outbound(
    settings: Settings,
    retry_methods: Collection[str] | None,
    breaker: CircuitBreaker | bool | None,
    attempts: int | None,
) -> _Outbound:
    import httpx

    not_sent = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
    return _Outbound(
        settings,
        retry_methods,
        breaker,
        attempts,
        (httpx.TransportError,),
        lambda error: isinstance(error, not_sent),
    )


def _quiet_httpx_request_lines() -> None:
    # httpx logs every request at INFO on its own logger; our http_request event
    # replaces that line (one event per call). A level the application set is kept.
    import logging

    httpx_logger = logging.getLogger("httpx")
    if httpx_logger.level == logging.NOTSET:
        httpx_logger.setLevel(logging.WARNING)


def _httpx_timeout(settings: Settings) -> httpx.Timeout:
    import httpx

    _quiet_httpx_request_lines()
    return httpx.Timeout(
        connect=settings.http_connect_timeout,
        read=settings.http_read_timeout,
        write=settings.http_read_timeout,
        pool=settings.http_connect_timeout,
    )


def client(
    *,
    settings: Settings | None = None,
    retry_methods: Collection[str] | None = None,
    breaker: CircuitBreaker | bool | None = None,
    attempts: int | None = None,
    **kwargs: Any,
) -> httpx.Client:
    """An `httpx.Client` whose every call carries the request id and trace context,
    has timeouts, is retried within a per-host budget, goes through a per-host circuit
    breaker and is logged once as ``http_request``.

    *retry_methods* replaces the methods retried (default: the idempotent ones; a request
    with an ``Idempotency-Key`` header is retried whatever its method). *breaker*:
    ``None`` for one in-process breaker per host, ``False`` for none, or a
    `CircuitBreaker` (for example one shared in Redis) used for every host. *attempts*
    replaces ``HTTP_RETRY_ATTEMPTS`` (1: no retries). Other keyword
    arguments go to `httpx.Client` (``base_url``, ``headers``, ``auth``, ``transport``,
    a ``timeout`` of your own, ...). A call to an open circuit raises `CircuitOpenError`.

    Raises `ImportError` with an install hint when httpx is missing.

    Examples:
        >>> from backend_kit import http
        >>> with http.client(base_url="http://127.0.0.1:1") as api:  # doctest: +SKIP
        ...     api.get("/rates").json()
    """
    kit_transport, _ = _transports()
    import httpx

    active = _settings(settings)
    inner = kwargs.pop("transport", None) or httpx.HTTPTransport()
    if kwargs.get("timeout") is None:
        kwargs["timeout"] = _httpx_timeout(active)
    outbound = _httpx_outbound(active, retry_methods, breaker, attempts)
    return httpx.Client(transport=kit_transport(inner, outbound), **kwargs)


def async_client(
    *,
    settings: Settings | None = None,
    retry_methods: Collection[str] | None = None,
    breaker: CircuitBreaker | bool | None = None,
    attempts: int | None = None,
    **kwargs: Any,
) -> httpx.AsyncClient:
    """The `httpx.AsyncClient` counterpart of `client`, with the same behaviour and
    arguments."""
    _, async_transport = _transports()
    import httpx

    active = _settings(settings)
    inner = kwargs.pop("transport", None) or httpx.AsyncHTTPTransport()
    if kwargs.get("timeout") is None:
        kwargs["timeout"] = _httpx_timeout(active)
    outbound = _httpx_outbound(active, retry_methods, breaker, attempts)
    return httpx.AsyncClient(transport=async_transport(inner, outbound), **kwargs)


# -- requests -----------------------------------------------------------------------------


def session(
    *,
    settings: Settings | None = None,
    retry_methods: Collection[str] | None = None,
    breaker: CircuitBreaker | bool | None = None,
    attempts: int | None = None,
) -> requests.Session:
    """A `requests.Session` with the behaviour of `client`: its ``http://`` and
    ``https://`` adapters add the headers, the timeouts (when a call gives none), the
    retries, the budget, the breaker and the ``http_request`` event.

    Raises `ImportError` with an install hint when requests is missing.
    """
    try:
        import requests
        import requests.adapters
    except ImportError:
        raise _install_hint("requests") from None

    active = _settings(settings)
    transient = (requests.ConnectionError, requests.Timeout)

    def never_sent(error: BaseException) -> bool:
        return isinstance(error, requests.exceptions.ConnectTimeout) or (
            isinstance(error, requests.ConnectionError)
            and not isinstance(error, requests.ReadTimeout)
            and _never_connected(error)
        )

    outbound = _Outbound(active, retry_methods, breaker, attempts, transient, never_sent)
    default_timeout = (active.http_connect_timeout, active.http_read_timeout)

    class KitAdapter(requests.adapters.HTTPAdapter):
        def send(
            self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
        ) -> requests.Response:
            started = time.perf_counter()
            if args:  # requests passes them by name; a direct caller may not
                kwargs.update(zip(_ADAPTER_SEND_ARGUMENTS, args, strict=False))
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = default_timeout
            method = request.method or "GET"
            url = request.url or ""
            # A prepared URL is "scheme://netloc/path...": its origin names the host.
            end = url.find("/", 8)
            origin = url if end < 0 else url[:end]
            state = outbound.hosts.get(origin) or outbound.add_host(origin, _requests_host(url))
            headers = request.headers
            present = {name.lower() for name in headers} if headers else _NO_HEADERS
            retryable = outbound.prepare(method, state, headers, present, _TEXT_NAMES)
            response: requests.Response = outbound.send(
                super().send, request, kwargs, method, url, state, retryable, started
            )
            return response

    kit_session = requests.Session()
    adapter = KitAdapter()
    kit_session.mount("http://", adapter)
    kit_session.mount("https://", adapter)
    return kit_session


_ADAPTER_SEND_ARGUMENTS = ("stream", "timeout", "verify", "cert", "proxies")


def _requests_host(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return _host_key(parts.scheme, parts.hostname or "", parts.port)


def _never_connected(error: BaseException) -> bool:
    # urllib3 wraps a refused or unresolvable connection in NewConnectionError.
    text = repr(getattr(error, "args", ()))
    return "NewConnectionError" in text or "NameResolutionError" in text
