"""Sentry: errors reported once, scrubbed by the shared redaction policy, tagged with the
request id.

sentry_sdk is imported only when a DSN (or a test transport) is given, so a service
without Sentry never pays for it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._context import (
    EXCEPTION_REQUEST_ID_ATTRIBUTE,
    REQUEST_ID_KEY,
    TASK_TAG_KEYS,
    current_context,
    current_request_id,
    enter_hooks,
)
from ._logging import set_event_reporter
from ._redact import Redactor, get_redactor

if TYPE_CHECKING:
    from ._settings import Settings

__all__ = [
    "configure_sentry",
    "is_sentry_configured",
    "reset_sentry",
]

#: Paths whose requests are never traced: health probes would drown real traffic.

# Event fields that are pipeline plumbing, not something the user logged.
_NOT_FIELDS = frozenset({"event", "exc_info", "stack_info", "_record", "_from_structlog"})
_SENTRY_LEVEL = {"critical": "fatal", "warn": "warning"}


@dataclass
class _SentryState:
    settings: Settings
    redactor: Redactor
    shutdown_timeout: float
    call: dict[str, Any]


_lock = threading.Lock()
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
    are added to sentry-sdk's defaults. Safe to call again: the last call wins.
    Returns ``True`` when Sentry is on.

    Raises `ValueError` for a negative *shutdown_timeout*.

    Examples:
        >>> configure_sentry()  # no SENTRY_DSN in the environment: nothing happens
        False
    """
    global _state
    from ._settings import get_settings

    if shutdown_timeout < 0:
        raise ValueError(f"shutdown_timeout must be zero or more seconds, got {shutdown_timeout!r}")
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
    }
    with _lock:
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
        if settings.sentry_traces_sample_rate > 0:
            options["traces_sampler"] = _TracesSampler(settings.sentry_traces_sample_rate, exclude)
        if transport is not None:
            options["transport"] = transport
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
    with _lock:
        state = _state
        _state = None
        set_event_reporter(None)
        if _tag_transaction in enter_hooks:
            enter_hooks.remove(_tag_transaction)
        if state is not None:
            _close_client(state.shutdown_timeout if timeout is None else timeout)


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
    if transaction is not None:
        transaction.set_tag(REQUEST_ID_KEY, request_id)


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
        from ._settings import active_settings_or_none

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
        message = event_dict.get("event")
        message = message if isinstance(message, str) else repr(message)
        sentry_level = _SENTRY_LEVEL.get(level, level)
        if level not in ("error", "critical"):
            sentry_sdk.add_breadcrumb(
                type="log", category=logger_name, message=message, level=sentry_level, data=fields
            )
            return
        from sentry_sdk.utils import event_from_exception

        from ._logging import _exc_info

        exc_info = _exc_info(event_dict.get("exc_info"))
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
