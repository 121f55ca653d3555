"""The steps every event runs through: request context, per-logger levels, the copy
to Sentry, exception formatting, redaction and layout, all inside one `Pipeline`."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import orjson
import structlog
from structlog.exceptions import DropEvent
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor, WrappedLogger

from .._active import active_settings_or_none, get_redactor
from .._context import get_context_mapping
from .._redact import Redactor
from .._trace import SPAN_ID_KEY, TRACE_ID_KEY, otel_span_ids
from ._clock import clock
from ._sink import forwarding_failures, sink

if TYPE_CHECKING:
    from .._settings import Settings

LEVELS: dict[str, int] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

# structlog method names (and lower-cased stdlib level names) to the level shown.
METHOD_LEVEL: dict[str, str] = {
    "debug": "debug",
    "info": "info",
    "msg": "info",
    "warn": "warning",
    "warning": "warning",
    "error": "error",
    "exception": "error",
    "critical": "critical",
    "fatal": "critical",
}
LEVEL_NUMBER: dict[str, int] = {name.lower(): number for name, number in LEVELS.items()}


#: Set by the Sentry module while Sentry is configured: called with the logger name, the
#: level name and the event dict (exc_info still raw) for every event that is emitted.
EventReporter = Callable[[str, str, EventDict], None]
_event_reporter: EventReporter | None = None


def set_event_reporter(reporter: EventReporter | None) -> None:
    """Install (or remove, with ``None``) the function that forwards events to Sentry."""
    global _event_reporter
    _event_reporter = reporter


def merge_request_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    context = get_context_mapping()
    if context:
        for key, value in context.items():
            if key not in event_dict:
                event_dict[key] = value
    # An active OpenTelemetry span is the trace of record: its ids replace our own.
    # One dict lookup when the application never imported OpenTelemetry.
    if "opentelemetry.trace" in sys.modules:
        ids = otel_span_ids()
        if ids is not None:
            event_dict[TRACE_ID_KEY] = ids[0]
            event_dict[SPAN_ID_KEY] = ids[1]
    return event_dict


def logger_name(logger: WrappedLogger, event_dict: EventDict) -> str:
    record = event_dict.get("_record")
    if record is not None:
        return str(record.name)
    return str(getattr(logger, "name", "root"))


def report_to_sentry(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    reporter = _event_reporter
    if reporter is not None:
        try:
            level = METHOD_LEVEL.get(method_name, method_name)
            reporter(logger_name(logger, event_dict), level, event_dict)
        except Exception as exc:
            # Sentry is a copy: the line itself is still written.
            forwarding_failures.record(f"forwarding to Sentry raised {type(exc).__name__}")
    return event_dict


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def exc_info_of(value: Any) -> ExcInfo | None:
    if isinstance(value, BaseException):
        return (type(value), value, value.__traceback__)
    if isinstance(value, tuple) and len(value) == 3 and value[0] is not None:
        return cast(ExcInfo, value)
    if value:
        current = sys.exc_info()
        if current[0] is not None:
            return cast(ExcInfo, current)
    return None


@dataclass
class ExceptionFormatter:
    """Turns ``exc_info`` into an ``exception`` field before redaction sees the event:
    a list of dicts for JSON, plain text for the console. Frame locals only on request."""

    structured: bool
    show_locals: bool
    _to_dicts: ExceptionDictTransformer = field(init=False)

    def __post_init__(self) -> None:
        self._to_dicts = ExceptionDictTransformer(show_locals=self.show_locals)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if "exc_info" in event_dict:
            exc_info = exc_info_of(event_dict.pop("exc_info"))
            if exc_info is not None:
                event_dict["exception"] = self._format(exc_info)
        stack = event_dict.pop("stack_info", None)
        if stack:
            event_dict["stack"] = (
                stack if isinstance(stack, str) else "".join(traceback.format_stack()[:-8])
            )
        return event_dict

    def _format(self, exc_info: ExcInfo) -> Any:
        if self.structured:
            return self._to_dicts(exc_info)
        rendered = traceback.TracebackException(*exc_info, capture_locals=self.show_locals)
        return "".join(rendered.format()).rstrip("\n")


# Active capture_logs() lists; checking them is one truth test when there are none.
captures: list[list[EventDict]] = []


class Finisher:
    """Redacts the event and lays out the final line: timestamp, level, event, logger,
    service, environment, then everything bound. If redaction raises, the event is
    dropped (never written unredacted) and a warning line says so. While
    `capture_events` is active, the finished event is collected instead of written."""

    def __init__(self, settings: Settings, redactor: Redactor) -> None:
        self._settings = settings
        self._redactor = redactor
        self._service = settings.service_name
        self._environment = settings.environment

    def redactor(self) -> Redactor:
        active = active_settings_or_none()
        # Follow the active settings (override_settings in tests, a reconfigured
        # service) without reloading anything on the hot path.
        if active is None or active is self._settings:
            return self._redactor
        return get_redactor()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        record = event_dict.pop("_record", None)
        event_dict.pop("_from_structlog", None)
        if record is not None:  # a standard-library record, through the bridge
            name = str(record.name)
            timestamp = clock.stamp(float(record.created))
        else:
            name = getattr(logger, "name", "root")
            if type(name) is not str:
                name = str(name)
            timestamp = clock.stamp()
        return self.layout(name, timestamp, method_name, event_dict)

    def layout(
        self, name: str, timestamp: str, method_name: str, event_dict: EventDict
    ) -> dict[str, Any]:
        """The finished line of *event_dict* (consumed) from logger *name*: what
        ``__call__`` gives once the name and the timestamp are known."""
        level = METHOD_LEVEL.get(method_name, method_name)
        try:
            active = active_settings_or_none()
            redactor = (
                self._redactor if active is None or active is self._settings else get_redactor()
            )
            event = event_dict.pop("event", None)
            line: dict[str, Any] = {
                "timestamp": timestamp,
                "level": level,
                "event": redactor.redact_text(event)
                if type(event) is str
                else redactor.redact_for_output({"event": event})["event"],
                "logger": name,
                "service": self._service,
                "environment": self._environment,
            }
            redactor.redact_for_output(event_dict, into=line)
        except Exception as exc:  # the policy failed: the event must not leave unredacted
            warn_dropped(name, exc)
            raise DropEvent from None
        if "timestamp" in event_dict or "level" in event_dict:
            # A field named like ours must not make the line lie about when or how bad.
            line["timestamp"], line["level"] = timestamp, level
        if captures:
            for captured in captures:
                captured.append(dict(line))
            raise DropEvent
        return line


def warn_dropped(logger_name: str, exc: BaseException) -> None:
    # Written straight to the sink: going through the pipeline could fail the same way.
    message = {
        "timestamp": clock.stamp(),
        "level": "warning",
        "event": "log_event_dropped",
        "logger": "backend_kit.logging",
        "reason": f"the redaction policy raised {type(exc).__name__}; the event was not written",
        "source_logger": logger_name,
    }
    # A broken sink has nowhere left to report to.
    with suppress(Exception):
        sink.write(orjson.dumps(message).decode())


class Pipeline:
    """The one processor structlog sees: runs the configured steps in order.

    Reconfiguring replaces ``steps`` (a tuple) in one assignment, and a call reads it
    once, so an event in flight runs either the old steps or the new ones, never a mix
    that skips the redaction step. A step that raises drops the event (counted and
    reported like a failed write): a log call never raises into its caller.

    ``steps`` is None while logging is not configured: the pipeline then runs the
    processors structlog is configured with at the time of the call (its defaults, or
    what `structlog.testing.capture_logs` puts there), as structlog's own loggers do.
    """

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps: tuple[Processor, ...] | None = None

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        result: Any = event_dict
        step: Processor | None = None
        steps = self.steps
        if steps is None:
            steps = tuple(structlog.get_config()["processors"])
        try:
            for step in steps:
                result = step(logger, method_name, result)
        except DropEvent:
            raise
        except Exception as exc:
            where = type(step).__name__ if step is not None else "a step"
            sink.drop(f"the log pipeline step {where} raised {type(exc).__name__}")
            raise DropEvent from None
        return result


@dataclass
class LevelByLogger:
    """Drops structlog events below the level set for their logger (``LOG_LEVELS``)."""

    levels: Mapping[str, int]
    default: int
    _cache: dict[str, int] = field(default_factory=dict)

    def threshold(self, name: str) -> int:
        cached = self._cache.get(name)
        if cached is None:
            cached = self.default
            best = -1
            for prefix, level in self.levels.items():
                if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                    cached, best = level, len(prefix)
            self._cache[name] = cached
        return cached

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        level = LEVEL_NUMBER.get(METHOD_LEVEL.get(method_name, "info"), logging.INFO)
        if level < self.threshold(str(getattr(logger, "name", ""))):
            raise DropEvent
        return event_dict
