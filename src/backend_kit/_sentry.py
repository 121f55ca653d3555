"""Sentry: errors reported once, scrubbed by the shared redaction policy, tagged with the
request id.

sentry_sdk is imported only when a DSN (or a test transport) is given, so a service
without Sentry never pays for it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _metric_hooks
from ._active import get_redactor, state_lock
from ._context import (
    EXCEPTION_REQUEST_ID_ATTRIBUTE,
    REQUEST_ID_KEY,
    TASK_TAG_KEYS,
    current_context,
    current_request_id,
    current_trace,
    enter_hooks,
)
from ._forksafe import after_fork_in_child
from ._logging import exc_info_of, set_event_reporter
from ._redact import MASK, Redactor
from ._trace import TraceContext, otel_span_ids

if TYPE_CHECKING:
    from ._settings import Settings

__all__ = [
    "SentryDrops",
    "configure_sentry",
    "dropped_sentry_events",
    "is_sentry_configured",
    "reset_sentry",
]

#: Paths whose requests are never traced: health probes would drown real traffic.

# Request headers never sent, not even masked: they carry nothing but credentials.
_DROPPED_HEADERS = frozenset({"cookie", "set-cookie", "authorization", "proxy-authorization"})
# The one line the request core writes per request: a 5xx is already reported as its
# exception (or was answered on purpose), so this line is a breadcrumb, never an event.
_REQUEST_LOGGER = "backend_kit.request"
_REQUEST_FINISHED = "request_finished"
# Frameworks' own line about a 5xx response; the exception behind one is its own event.
_RESPONSE_LOGGERS = frozenset({"django.request", "django.server"})

# Event fields that are pipeline plumbing, not something the user logged.
_NOT_FIELDS = frozenset({"event", "exc_info", "stack_info", "_record", "_from_structlog"})
_SENTRY_LEVEL = {"critical": "fatal", "warn": "warning"}


@dataclass
class _SentryState:
    settings: Settings
    redactor: Redactor
    shutdown_timeout: float
    call: dict[str, Any]


_state: _SentryState | None = None


def is_sentry_configured() -> bool:
    """True when `configure_sentry()` initialised sentry-sdk and `reset_sentry()` has
    not been called since."""
    return _state is not None


def configure_sentry(
    settings: Settings | None = None,
    *,
    dsn: str | None = None,
    traces_exclude_paths: Iterable[str] | None = None,
    shutdown_timeout: float = 2.0,
    transport: Any = None,
    integrations: Iterable[Any] = (),
    drop_warning_interval: float = 60.0,
) -> bool:
    """Initialise sentry-sdk from *settings* (default: the active settings).

    Without a DSN (``SENTRY_DSN`` or *dsn*) this does nothing, does not import
    sentry_sdk, and returns ``False``. Otherwise it sets environment, release and sample
    rates from the settings, ``send_default_pii=False``, hooks that run the redaction
    policy over every event, breadcrumb and transaction and tag them with the request
    id, a traces sampler that never samples *traces_exclude_paths* (default: the health
    endpoints and ``SENTRY_TRACES_EXCLUDE_PATHS``), and forwards structured log events: error and
    above become Sentry events, lower ones breadcrumbs. sentry-sdk's own logging
    integration is turned off so an error logged once is reported once. At exit, queued
    events are flushed for at most *shutdown_timeout* seconds. *transport* replaces the
    HTTP transport (see `backend_kit.testing.capture_sentry_events`); *integrations*
    are added to sentry-sdk's defaults. Events the HTTP transport drops (queue full,
    rate-limited, endpoint unreachable or failing) are counted (`dropped_sentry_events`)
    and reported by one ``sentry_events_dropped`` warning in the application log per
    *drop_warning_interval* seconds. Safe to call again: the last call wins.
    Returns ``True`` when Sentry is on.

    Raises `ValueError` for a negative *shutdown_timeout* or a *drop_warning_interval*
    that is not positive.

    Examples:
        >>> configure_sentry()  # no SENTRY_DSN in the environment: nothing happens
        False
    """
    global _state
    from ._active import get_settings

    if shutdown_timeout < 0:
        raise ValueError(f"shutdown_timeout must be zero or more seconds, got {shutdown_timeout!r}")
    if not drop_warning_interval > 0:
        raise ValueError(
            f"drop_warning_interval must be a positive number of seconds, "
            f"got {drop_warning_interval!r}"
        )
    settings = settings if settings is not None else get_settings()
    if dsn is None and settings.sentry_dsn is not None:
        dsn = settings.sentry_dsn.get_secret_value()
    if dsn is None:
        if _state is not None:
            reset_sentry()
        return False

    import sentry_sdk
    from sentry_sdk.integrations.logging import LoggingIntegration

    from .health import health_paths

    if traces_exclude_paths is None:
        # The health endpoints where the adapters serve them, plus any the user names.
        traces_exclude_paths = (
            *health_paths(settings).all(),
            *settings.sentry_traces_exclude_paths,
        )
    exclude = frozenset(_normalise_path(p) for p in traces_exclude_paths)
    redactor = Redactor.from_settings(settings)
    call = {
        "dsn": dsn,
        "traces_exclude_paths": tuple(exclude),
        "shutdown_timeout": shutdown_timeout,
        "transport": transport,
        "integrations": tuple(integrations),
        "drop_warning_interval": drop_warning_interval,
    }
    with state_lock():
        if _state is not None:
            _close_client(_state.shutdown_timeout)
        state = _SentryState(settings, redactor, shutdown_timeout, call)
        hooks = _Hooks(state)
        options: dict[str, Any] = {
            "dsn": dsn,
            "environment": settings.environment,
            "release": settings.release,
            "sample_rate": settings.sentry_sample_rate,
            # No PII: that is sentry-sdk's default, and recent versions warn when
            # send_default_pii is passed at all (data_collection replaces it).
            "include_local_variables": bool(getattr(settings, "log_traceback_locals", False)),
            "before_send": hooks.before_send,
            "before_send_transaction": hooks.before_send_transaction,
            "before_breadcrumb": hooks.before_breadcrumb,
            "shutdown_timeout": shutdown_timeout,
            # Structured log events are forwarded by the logging pipeline; the stdlib
            # integration would report the same error a second time.
            "integrations": [
                LoggingIntegration(level=None, event_level=None, sentry_logs_level=None),
                *integrations,
            ],
        }
        # Request bodies hold personal data: sent only when the user asks, and then
        # redacted in before_send like the rest of the event.
        options["max_request_body_size"] = (
            "medium" if settings.sentry_send_request_bodies else "never"
        )
        if settings.sentry_send_client_ip:
            # The SDK adds the client address only with user info (formerly "default
            # PII") on; what else that adds (cookies, the user's name and e-mail) is
            # removed in before_send.
            from sentry_sdk.consts import DEFAULT_OPTIONS

            if "data_collection" in DEFAULT_OPTIONS:
                options["data_collection"] = {
                    "user_info": True,
                    # data_collection overrides include_local_variables: keep its choice.
                    "stack_frame_variables": options["include_local_variables"],
                }
            else:  # sentry-sdk before data_collection
                options["send_default_pii"] = True
        if settings.sentry_traces_sample_rate > 0:
            options["traces_sampler"] = _TracesSampler(settings.sentry_traces_sample_rate, exclude)
        _drops.restart(drop_warning_interval)
        options["transport"] = transport if transport is not None else _counting_transport()
        sentry_sdk.init(**options)
        _state = state
        set_event_reporter(hooks.report_log_event)
        if _tag_transaction not in enter_hooks:
            enter_hooks.append(_tag_transaction)
    return True


def reset_sentry(*, timeout: float | None = None) -> None:
    """Flush (for at most *timeout* seconds, default the configured shutdown timeout),
    close the Sentry client and forget everything `configure_sentry()` set up."""
    global _state
    with state_lock():
        state = _state
        _state = None
        set_event_reporter(None)
        if _tag_transaction in enter_hooks:
            enter_hooks.remove(_tag_transaction)
        if state is not None:
            _close_client(state.shutdown_timeout if timeout is None else timeout)
    # Drops not yet reported (those of the last interval, or of the final flush).
    _drops.report_pending()


def _close_client(timeout: float) -> None:
    if "sentry_sdk" not in sys.modules:
        return
    import sentry_sdk

    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout)
    sentry_sdk.get_global_scope().set_client(None)
    for scope in (sentry_sdk.get_isolation_scope(), sentry_sdk.get_current_scope()):
        scope.clear()


def last_configure_call() -> dict[str, Any] | None:
    """The keyword arguments of the last successful `configure_sentry()`, for restoring."""
    state = _state
    return None if state is None else {"settings": state.settings, **state.call}


def _normalise_path(path: str) -> str:
    path = path.split("?", 1)[0]
    return path.rstrip("/") or "/"


class _TracesSampler:
    """Never trace health probes; otherwise follow the parent's decision, else the rate."""

    def __init__(self, rate: float, exclude: frozenset[str]) -> None:
        self.rate = rate
        self.exclude = exclude

    def __call__(self, sampling_context: Mapping[str, Any]) -> float:
        if self._path(sampling_context) in self.exclude:
            return 0.0
        parent = sampling_context.get("parent_sampled")
        if parent is not None:
            return 1.0 if parent else 0.0
        return self.rate

    @staticmethod
    def _path(sampling_context: Mapping[str, Any]) -> str | None:
        environ = sampling_context.get("wsgi_environ")
        if isinstance(environ, Mapping) and isinstance(environ.get("PATH_INFO"), str):
            return _normalise_path(environ["PATH_INFO"])
        scope = sampling_context.get("asgi_scope")
        if isinstance(scope, Mapping) and isinstance(scope.get("path"), str):
            return _normalise_path(scope["path"])
        transaction = sampling_context.get("transaction_context")
        if isinstance(transaction, Mapping) and isinstance(transaction.get("name"), str):
            name = transaction["name"]
            # "GET /healthz" as well as "/healthz"
            return _normalise_path(name.rsplit(" ", 1)[-1])
        return None


def _tag_transaction(request_id: str) -> None:
    # Tag the transaction a framework integration opened before our context was
    # entered, so it carries the id even though it finishes after the context exits.
    import sentry_sdk

    span = sentry_sdk.get_current_span()
    transaction = span.containing_transaction if span is not None else None
    trace = current_trace()
    if transaction is not None:
        transaction.set_tag(REQUEST_ID_KEY, request_id)
        if trace is not None and transaction.trace_id != trace.trace_id:
            # Sentry's integration only reads its own header: move its transaction
            # onto the W3C trace the request arrived with, so both tell one story.
            transaction.trace_id = trace.trace_id
    if trace is not None:
        _continue_trace(trace)


def _continue_trace(trace: TraceContext) -> None:
    """Continue Sentry's trace from the request's W3C trace: events captured without a
    transaction take their trace context from the scope's propagation context."""
    import sentry_sdk

    sampled = "-1" if trace.sampled else ""
    parent = trace.parent_span_id or trace.span_id
    scope = sentry_sdk.get_isolation_scope()
    scope.generate_propagation_context({"sentry-trace": f"{trace.trace_id}-{parent}{sampled}"})
    propagation = scope.get_active_propagation_context()
    if propagation is not None:
        propagation.span_id = trace.span_id


def _set_trace_context(event: dict[str, Any]) -> None:
    # The ids of the request's log lines, whichever scope or thread captured the event
    # (the isolation scope is shared by threads when no integration forked it).
    ids = otel_span_ids()
    if ids is None:
        trace = current_trace()
        if trace is None:
            return
        ids = (trace.trace_id, trace.span_id, trace.flags)
    contexts = event.get("contexts")
    if not isinstance(contexts, dict):
        contexts = event["contexts"] = {}
    trace_context = contexts.get("trace")
    if not isinstance(trace_context, dict):
        trace_context = contexts["trace"] = {}
    if trace_context.get("trace_id") != ids[0]:
        trace_context["trace_id"] = ids[0]
        trace_context["span_id"] = ids[1]


def _warn(what: str, exc: BaseException) -> None:
    # Local only, and not through logging: the policy that just failed runs there too.
    sys.stderr.write(
        f"backend_kit: dropped a Sentry {what} because the redaction policy raised "
        f"{type(exc).__name__}; nothing was sent\n"
    )


class _Hooks:
    def __init__(self, state: _SentryState) -> None:
        self._state = state

    def _redactor(self) -> Redactor:
        from ._active import active_settings_or_none

        active = active_settings_or_none()
        if active is None or active is self._state.settings:
            return self._state.redactor
        return get_redactor()

    def _scrub(
        self, what: str, event: dict[str, Any], hint: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        try:
            request_id = current_request_id()
            if request_id is None:
                exc_info = hint.get("exc_info")
                exc = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) == 3 else None
                found = getattr(exc, EXCEPTION_REQUEST_ID_ATTRIBUTE, None)
                request_id = found if isinstance(found, str) else None
            if request_id is not None:
                tags = event.get("tags")
                if not isinstance(tags, dict):
                    tags = event["tags"] = {}
                tags.setdefault(REQUEST_ID_KEY, request_id)
                # A background task's ids (backend_kit.celery) are tags as well.
                context = current_context()
                for key in TASK_TAG_KEYS:
                    if isinstance(context.get(key), str):
                        tags.setdefault(key, context[key])
            _set_trace_context(event)
            settings = self._state.settings
            _scrub_personal_data(
                event,
                send_bodies=settings.sentry_send_request_bodies,
                send_client_ip=settings.sentry_send_client_ip,
            )
            return self._redactor().redact_for_output(event)
        except Exception as exc:
            _warn(what, exc)
            return None

    def before_send(self, event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any] | None:
        return self._scrub("event", event, hint)

    def before_send_transaction(
        self, event: dict[str, Any], hint: dict[str, Any]
    ) -> dict[str, Any] | None:
        return self._scrub("transaction", event, hint)

    def before_breadcrumb(
        self, crumb: dict[str, Any], hint: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        try:
            return self._redactor().redact_for_output(crumb)
        except Exception as exc:
            _warn("breadcrumb", exc)
            return None

    def report_log_event(self, logger_name: str, level: str, event_dict: Mapping[str, Any]) -> None:
        """Forward one emitted log event: error and above as an event, else a breadcrumb."""
        if logger_name.startswith("sentry_sdk"):
            return  # the SDK's own diagnostics would loop back into it
        import sentry_sdk

        fields = {k: v for k, v in event_dict.items() if k not in _NOT_FIELDS}
        if logger_name in _RESPONSE_LOGGERS:
            # The request's repr holds its query string; the event's request is scrubbed.
            fields.pop("request", None)
        message = event_dict.get("event")
        message = message if isinstance(message, str) else repr(message)
        sentry_level = _SENTRY_LEVEL.get(level, level)
        if level not in ("error", "critical") or _is_response_line(
            logger_name, message, event_dict
        ):
            sentry_sdk.add_breadcrumb(
                type="log", category=logger_name, message=message, level=sentry_level, data=fields
            )
            return
        from sentry_sdk.utils import event_from_exception

        exc_info = exc_info_of(event_dict.get("exc_info"))
        event: dict[str, Any]
        hint: dict[str, Any]
        if exc_info is not None:
            client = sentry_sdk.get_client()
            built, hint = event_from_exception(
                exc_info,
                client_options=client.options,
                mechanism={"type": "logging", "handled": True},
            )
            event = dict(built)
        else:
            event, hint = {}, {}
        event["level"] = sentry_level
        event["logger"] = logger_name
        event["logentry"] = {"message": message, "params": []}
        event["extra"] = fields
        sentry_sdk.capture_event(event, hint=hint)  # type: ignore[arg-type]


def _is_response_line(logger_name: str, message: str, event_dict: Mapping[str, Any]) -> bool:
    """True for the line that says a request ended in a 5xx: the failure is reported by
    its exception, once, and a 5xx answered on purpose is not a failure to report."""
    if logger_name == _REQUEST_LOGGER:
        return message == _REQUEST_FINISHED
    # Django's own line for an exception duplicates the integration's event, which
    # carries the scrubbed request; its line for a 5xx answered on purpose is no failure.
    return logger_name in _RESPONSE_LOGGERS and "status_code" in event_dict


def _mask_query_values(query: str) -> str:
    """``email=ann@example.com&page=2`` becomes ``email=***&page=***``: the keys say what
    was asked, the values may be personal data."""
    pairs = []
    for pair in query.split("&"):
        key, equals, _ = pair.partition("=")
        pairs.append(f"{key}={MASK}" if equals else key)
    return "&".join(pairs)


def _scrub_personal_data(event: dict[str, Any], *, send_bodies: bool, send_client_ip: bool) -> None:
    """Remove from *event*, in place, what is never sent: cookies, credentials headers,
    query-string values, the request body (unless *send_bodies*), the user's name and
    e-mail and, unless *send_client_ip*, the client address."""
    request = event.get("request")
    if isinstance(request, dict):
        request.pop("cookies", None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            for name in [n for n in headers if str(n).lower() in _DROPPED_HEADERS]:
                del headers[name]
        query = request.get("query_string")
        if isinstance(query, str) and query:
            request["query_string"] = _mask_query_values(query)
        elif isinstance(query, (dict, list)) and query:
            request["query_string"] = MASK
        if not send_bodies:
            request.pop("data", None)
        env = request.get("env")
        if isinstance(env, dict):
            kept = (
                {"REMOTE_ADDR": env["REMOTE_ADDR"]}
                if send_client_ip and "REMOTE_ADDR" in env
                else {}
            )
            if kept:
                request["env"] = kept
            else:
                request.pop("env", None)
    user = event.get("user")
    if isinstance(user, dict):
        # An opaque id (set with sentry_sdk.set_user) groups events by user; a name, an
        # e-mail or an address identifies a person.
        kept = {"id": user["id"]} if user.get("id") is not None else {}
        if send_client_ip and user.get("ip_address"):
            kept["ip_address"] = user["ip_address"]
        if kept:
            event["user"] = kept
        else:
            event.pop("user", None)


@after_fork_in_child
def _fresh_transport_after_fork() -> None:
    # The transport's queue holds the parent's unsent events (sending them here too
    # would duplicate them), and its lock and connection pool may be mid-use by the
    # parent's sender thread: the child gets a transport of its own.
    if _state is None or "sentry_sdk" not in sys.modules:
        return
    import sentry_sdk
    from sentry_sdk.transport import make_transport

    client = sentry_sdk.get_client()
    if client.is_active():
        client.transport = make_transport(client.options)


# -- dropped events ---------------------------------------------------------------------

#: Why the transport lost an event, for the reasons that mean Sentry did not get it
#: (sampling and before_send filters are choices, not losses, and are not counted).
_LOSS_REASONS = frozenset(
    {
        "queue_overflow",
        "ratelimit_backoff",
        "network_error",
        "send_error",
        "internal_sdk_error",
        "backpressure",
        "rate_limited",  # answered 429 (sentry-sdk leaves that loss to the server to count)
    }
)
# Whole events; sentry-sdk also records the spans and bytes inside them separately.
_EVENT_CATEGORIES = frozenset({"error", "transaction", "default"})


@dataclass(frozen=True)
class SentryDrops:
    """Events the Sentry transport dropped since the process started.

    *by_reason* counts them by sentry-sdk's reason (``queue_overflow``,
    ``ratelimit_backoff``, ``network_error``, ``send_error``...);
    *seconds_since_last* is how long ago the last one was (``None``: never), *interval*
    the warning interval.
    """

    total: int
    by_reason: Mapping[str, int] = field(default_factory=dict)
    seconds_since_last: float | None = None
    interval: float = 60.0

    @property
    def recent(self) -> bool:
        """True when an event was dropped within the last warning interval."""
        return self.seconds_since_last is not None and self.seconds_since_last < self.interval


class _DropCounter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.interval = 60.0
        self.by_reason: Counter[str] = Counter()
        self.unreported: Counter[str] = Counter()
        self.last_drop: float | None = None
        self.last_warning: float | None = None

    def restart(self, interval: float) -> None:
        """A new configuration: a new interval, whose first drop is warned at once."""
        with self.lock:
            self.interval = interval
            self.last_warning = None

    def record(self, reason: str, category: str | None, quantity: int) -> None:
        if reason not in _LOSS_REASONS or category not in _EVENT_CATEGORIES:
            return
        now = time.monotonic()
        recorder = _metric_hooks.recorder
        if recorder is not None:
            recorder.sentry_dropped(reason, quantity)
        with self.lock:
            self.by_reason[reason] += quantity
            self.unreported[reason] += quantity
            self.last_drop = now
            due = self.last_warning is None or now - self.last_warning >= self.interval
            pending = self._take(now) if due else None
        if pending:
            _warn_dropped(pending, self.interval)

    def _take(self, now: float) -> dict[str, int]:
        pending = dict(self.unreported)
        self.unreported.clear()
        self.last_warning = now
        return pending

    def report_pending(self) -> None:
        with self.lock:
            pending = self._take(time.monotonic()) if self.unreported else None
        if pending:
            _warn_dropped(pending, self.interval)

    def snapshot(self) -> SentryDrops:
        now = time.monotonic()
        with self.lock:
            return SentryDrops(
                total=sum(self.by_reason.values()),
                by_reason=dict(self.by_reason),
                seconds_since_last=None if self.last_drop is None else now - self.last_drop,
                interval=self.interval,
            )


_drops = _DropCounter()


def dropped_sentry_events() -> SentryDrops:
    """How many events the Sentry transport has dropped in this process, and why."""
    return _drops.snapshot()


@after_fork_in_child
def _reset_drops_after_fork() -> None:
    # A forked worker starts counting afresh, with a lock no other thread can hold.
    global _drops
    interval = _drops.interval
    _drops = _DropCounter()
    _drops.interval = interval


def _warn_dropped(by_reason: Mapping[str, int], interval: float) -> None:
    # A drop report must never fail the caller (a request, or the transport's thread).
    with contextlib.suppress(Exception):
        from ._logging import get_logger

        get_logger("backend_kit.sentry").warning(
            "sentry_events_dropped",
            dropped=sum(by_reason.values()),
            reasons=dict(sorted(by_reason.items())),
            total=_drops.snapshot().total,
            hint="Sentry did not receive these events; at most one such warning is "
            f"logged per {interval:g} s",
        )


def _counting_transport() -> Any:
    """sentry-sdk's HTTP transport, counting what it drops."""
    from sentry_sdk.transport import HttpTransport

    class CountingHttpTransport(HttpTransport):
        # An endpoint that accepts and never answers holds the sending thread this long
        # per envelope (sentry-sdk's own default is 30 s); meanwhile the queue fills and
        # further events are dropped, and counted, at once.
        TIMEOUT = 5
        # Off once the client is closed: its worker may go on sending what was queued
        # (to an endpoint that never answers, for minutes), and those outcomes belong
        # to a configuration that is gone.
        counting = True

        def kill(self) -> None:
            self.counting = False
            super().kill()

        def record_lost_event(
            self,
            reason: str,
            data_category: Any = None,
            item: Any = None,
            *,
            quantity: int = 1,
        ) -> None:
            if self.counting:
                with contextlib.suppress(Exception):
                    category = item.data_category if item is not None else data_category
                    _drops.record(reason, category, 1 if item is not None else quantity)
            super().record_lost_event(reason, data_category, item, quantity=quantity)

        def on_dropped_event(self, reason: str) -> None:
            if reason == "status_429" and self.counting:  # the envelope the server refused
                with contextlib.suppress(Exception):
                    _drops.record("rate_limited", "error", 1)
            super().on_dropped_event(reason)

    return CountingHttpTransport
