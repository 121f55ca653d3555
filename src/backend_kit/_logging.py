"""Structured logging: one pipeline for structlog and the standard library.

`configure_logging()` builds the pipeline once: request context is merged, errors are
forwarded to Sentry when it is configured, exceptions are formatted (without frame
locals unless asked), the redaction policy runs over the whole event, and one renderer
(JSON via orjson, or structlog's console renderer) writes one line per event. Records
of standard-library loggers (``werkzeug``, ``django.request``, ``gunicorn.error``,
``urllib3``...) reach the same processors through structlog's ``ProcessorFormatter``.

Loggers that structlog cached on first use keep pointing at the objects below, whose
steps are swapped in one assignment, so calling `configure_logging()` again (or
`reset_logging()`) takes effect for them too, and an event in flight never sees half
of each. A log call never raises: a step that fails or a write that fails drops the
line, counts it, and says so on stderr at most once per interval.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

import orjson
import structlog

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows, which has no pre-fork servers either
    fcntl = None  # type: ignore[assignment]
from structlog.exceptions import DropEvent
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from . import _metric_hooks
from ._context import get_context_mapping
from ._forksafe import after_fork_in_child
from ._redact import Redactor, get_redactor
from ._settings import active_settings_or_none, get_settings

if TYPE_CHECKING:
    from ._settings import Settings

__all__ = [
    "configure_logging",
    "get_logger",
    "is_logging_configured",
    "reset_logging",
]

_LEVELS: dict[str, int] = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
    "CRITICAL": logging.CRITICAL,
}

# structlog method names (and lower-cased stdlib level names) to the level shown.
_METHOD_LEVEL: dict[str, str] = {
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
_LEVEL_NUMBER: dict[str, int] = {name.lower(): number for name, number in _LEVELS.items()}

# Stdlib loggers that servers set up with their own handlers and propagate=False; they
# are pointed at the root handler so their lines look like everyone else's.
_ADOPTED_LOGGERS = (
    "gunicorn.error",
    "gunicorn.access",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)

Format = Literal["json", "console", "auto"]

#: Set by the Sentry module while Sentry is configured: called with the logger name, the
#: level name and the event dict (exc_info still raw) for every event that is emitted.
EventReporter = Callable[[str, str, EventDict], None]
_event_reporter: EventReporter | None = None


def set_event_reporter(reporter: EventReporter | None) -> None:
    """Install (or remove, with ``None``) the function that forwards events to Sentry."""
    global _event_reporter
    _event_reporter = reporter


class _LevelledLogger(structlog.BoundLoggerBase):
    """A filtering bound logger whose level can be changed in place.

    Its methods are copied from structlog's filtering logger for the configured level, so
    a call below the level is a method that returns ``None`` at once; re-copying them
    on reconfiguration reaches loggers that structlog already cached.
    """


def _set_min_level(level: int) -> None:
    source = structlog.make_filtering_bound_logger(level)
    for name, member in vars(source).items():
        if not name.startswith("__"):
            setattr(_LevelledLogger, name, member)


_set_min_level(logging.NOTSET)


#: Seconds a log call waits for its turn to write before it gives the line up.
_WRITE_LOCK_TIMEOUT = 5.0
#: Seconds a writer waits for the lock it shares with other processes (see
#: `use_process_lock`); then it writes anyway: a line that may interleave beats a
#: service that hangs because another process stopped while holding the lock.
_PROCESS_LOCK_TIMEOUT = 2.0
#: Dropped lines are reported on stderr at most once per this many seconds.
_DROP_REPORT_INTERVAL = 10.0


class _FailureReport:
    """Counts failures of one kind and says so on stderr at most once per interval,
    with the number since the previous report: never through logging, which may be
    the very thing failing."""

    __slots__ = ("_last_reason", "_last_report", "_unreported", "count", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self._unreported = 0
        self._last_reason = ""
        self._last_report: float | None = None

    def record(self, reason: str) -> None:
        self.count += 1
        self._unreported += 1
        self._last_reason = reason
        now = time.monotonic()
        if self._last_report is None or now - self._last_report >= _DROP_REPORT_INTERVAL:
            self._last_report = now
            self._write()

    def report_remaining(self) -> None:
        """Report what failed since the last report, if anything (at exit, where the
        interval would otherwise swallow the last failures)."""
        if self._unreported:
            self._write()

    def _write(self) -> None:
        unreported, self._unreported = self._unreported, 0
        message = (
            f"backend_kit: {unreported} {self.what} ({self.count} since start); "
            f"last reason: {self._last_reason[:200]}\n"
        )
        with suppress(Exception):  # stderr may be broken too: nowhere left to say it
            os.write(2, message.encode("utf-8", "replace"))

    def reset(self) -> None:
        self.count = self._unreported = 0
        self._last_reason = ""
        self._last_report = None


#: Log events whose copy could not be forwarded to Sentry (the line was still written).
_forwarding_failures = _FailureReport("log event(s) could not be forwarded to Sentry")


class _ProcessLock:
    """An exclusive POSIX record lock on a file descriptor that several processes share.

    The lock belongs to the process that took it, so processes forked after the file
    was opened exclude each other through the one descriptor they all inherited, and
    the kernel releases the lock of a process that dies while holding it.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise RuntimeError("a lock shared between processes needs fcntl (POSIX)")
        self.fd = fd

    def acquire(self) -> bool:
        """Take the lock, waiting at most `_PROCESS_LOCK_TIMEOUT`; False if not taken."""
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            pass
        deadline = time.monotonic() + _PROCESS_LOCK_TIMEOUT
        pause = 0.0001
        while True:
            time.sleep(pause)
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
            pause = min(pause * 2, 0.002)

    def release(self) -> None:
        with suppress(OSError):
            fcntl.lockf(self.fd, fcntl.LOCK_UN)


class _Sink:
    """Writes rendered lines to a text stream, one ``write`` per line, under a lock
    (and, when set, a lock shared with the other processes writing to the same pipe).

    A write never raises: a line that cannot be written (a closed or broken stdout, a
    full disk, a lock not obtained in time) is counted in ``dropped`` and reported on
    stderr at most once per `_DROP_REPORT_INTERVAL`.
    """

    __slots__ = ("_lock", "failures", "process_lock", "stream", "unlocked_writes")

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.process_lock: _ProcessLock | None = None
        self._lock = threading.Lock()
        self.failures = _FailureReport("log line(s) could not be written")
        self.unlocked_writes = 0

    @property
    def dropped(self) -> int:
        """Lines not written since the process started (or forked)."""
        return self.failures.count

    def write(self, line: str) -> None:
        # None means "whatever sys.stdout is right now", as structlog's PrintLogger does.
        stream = self.stream if self.stream is not None else sys.stdout
        lock = self._lock
        # Untimed first: a timed acquire costs more than the rest of the write.
        if not lock.acquire(False) and not lock.acquire(True, _WRITE_LOCK_TIMEOUT):
            self.drop("waited too long for the log lock")
            return
        try:
            shared = self.process_lock
            if shared is None:
                stream.write(line + "\n")
                stream.flush()
            else:
                self._write_shared(stream, line, shared)
        except Exception as exc:
            lock.release()
            self.drop(f"{type(exc).__name__}: {exc}")
            return
        lock.release()

    def _write_shared(self, stream: TextIO, line: str, shared: _ProcessLock) -> None:
        locked = shared.acquire()
        if not locked:
            self.unlocked_writes += 1
        try:
            stream.write(line + "\n")
            stream.flush()
        finally:
            if locked:
                shared.release()

    def drop(self, reason: str) -> None:
        """Count one line that was not written; say so on stderr when a report is due."""
        self.failures.record(reason)
        recorder = _metric_hooks.recorder
        if recorder is not None:
            recorder.log_line_dropped()

    def reset_after_fork(self) -> None:
        # Another thread of the parent may have held the lock mid-write.
        self._lock = threading.Lock()
        self.failures.reset()
        self.unlocked_writes = 0


_sink = _Sink(None)


class _NamedLogger:
    """What structlog wraps: a name (for the ``logger`` field) and the shared sink."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, message: str) -> None:
        _sink.write(message)

    debug = info = warning = warn = error = critical = fatal = exception = log = msg


def _caller_module(depth: int) -> str:
    frame: FrameType | None = sys._getframe(depth)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if not (module.startswith("structlog") or module == __name__):
            return module or "root"
        frame = frame.f_back
    return "root"


def _logger_factory(*args: Any) -> _NamedLogger:
    name = args[0] if args and isinstance(args[0], str) else _caller_module(2)
    return _NamedLogger(name)


def get_logger(name: str | None = None, **initial_values: Any) -> FilteringBoundLogger:
    """A structlog logger named *name* (default: the calling module's ``__name__``).

    Works before `configure_logging()` too (structlog's defaults apply until then).
    Extra keyword arguments are bound to every line of this logger.

    Examples:
        >>> log = get_logger("billing", component="invoices")
        >>> log.info("invoice_sent", invoice_id=42)  # doctest: +SKIP
    """
    if name is None:
        name = _caller_module(2)
    return cast(FilteringBoundLogger, structlog.get_logger(name, **initial_values))


# --- processors --------------------------------------------------------------------


def _merge_request_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    context = get_context_mapping()
    if context:
        for key, value in context.items():
            if key not in event_dict:
                event_dict[key] = value
    return event_dict


def _logger_name(logger: WrappedLogger, event_dict: EventDict) -> str:
    record = event_dict.get("_record")
    if record is not None:
        return str(record.name)
    return str(getattr(logger, "name", "root"))


def _report(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    reporter = _event_reporter
    if reporter is not None:
        try:
            level = _METHOD_LEVEL.get(method_name, method_name)
            reporter(_logger_name(logger, event_dict), level, event_dict)
        except Exception as exc:
            # Sentry is a copy: the line itself is still written.
            _forwarding_failures.record(f"forwarding to Sentry raised {type(exc).__name__}")
    return event_dict


ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def _exc_info(value: Any) -> ExcInfo | None:
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
class _ExceptionFormatter:
    """Turns ``exc_info`` into an ``exception`` field before redaction sees the event:
    a list of dicts for JSON, plain text for the console. Frame locals only on request."""

    structured: bool
    show_locals: bool
    _to_dicts: ExceptionDictTransformer = field(init=False)

    def __post_init__(self) -> None:
        self._to_dicts = ExceptionDictTransformer(show_locals=self.show_locals)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if "exc_info" in event_dict:
            exc_info = _exc_info(event_dict.pop("exc_info"))
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
_captures: list[list[EventDict]] = []


class _Finisher:
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
        if record is not None:
            name = str(record.name)
            created = float(record.created)
        else:
            name = str(getattr(logger, "name", "root"))
            created = None
        try:
            redactor = self.redactor()
            event = event_dict.pop("event", None)
            line: dict[str, Any] = {
                "timestamp": _clock.stamp(created),
                "level": _METHOD_LEVEL.get(method_name, method_name),
                "event": redactor.redact_text(event)
                if type(event) is str
                else redactor.redact_for_output({"event": event})["event"],
                "logger": name,
                "service": self._service,
                "environment": self._environment,
            }
            timestamp, level = line["timestamp"], line["level"]
            redactor.redact_for_output(event_dict, into=line)
            # A field named like ours must not make the line lie about when or how bad.
            line["timestamp"], line["level"] = timestamp, level
        except Exception as exc:  # the policy failed: the event must not leave unredacted
            _warn_dropped(name, exc)
            raise DropEvent from None
        if _captures:
            for captured in _captures:
                captured.append(dict(line))
            raise DropEvent
        return line


class _UTCClock:
    """ISO 8601 UTC timestamps with microseconds, the seconds part formatted once per
    second: ``datetime.isoformat`` would be the most expensive step of a log call."""

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: tuple[int, str] = (-1, "")

    def stamp(self, created: float | None = None) -> str:
        moment = time.time() if created is None else created
        second = int(moment)
        cached_second, prefix = self._current  # one read: threads never see a torn pair
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._current = (second, prefix)
        return f"{prefix}.{int((moment - second) * 1_000_000):06d}Z"


_clock = _UTCClock()


def _warn_dropped(logger_name: str, exc: BaseException) -> None:
    # Written straight to the sink: going through the pipeline could fail the same way.
    message = {
        "timestamp": _clock.stamp(),
        "level": "warning",
        "event": "log_event_dropped",
        "logger": "backend_kit.logging",
        "reason": f"the redaction policy raised {type(exc).__name__}; the event was not written",
        "source_logger": logger_name,
    }
    # A broken sink has nowhere left to report to.
    with suppress(Exception):
        _sink.write(orjson.dumps(message).decode())


_TRUNCATED = "...[{} characters cut]"
#: Frames a shortened traceback keeps at each end.
_FRAMES_KEPT = 5


def _shorten(line: dict[str, Any], excess: int) -> bool:
    """Cut about *excess* characters from *line*: a traceback's middle frames first,
    then the longest string values, each keeping its head. False if nothing is left
    to cut."""
    exception = line.get("exception")
    if isinstance(exception, list):
        for chained in exception:
            frames = chained.get("frames") if isinstance(chained, dict) else None
            if isinstance(frames, list) and len(frames) > 2 * _FRAMES_KEPT + 1:
                omitted = len(frames) - 2 * _FRAMES_KEPT
                chained["frames"] = [
                    *frames[:_FRAMES_KEPT],
                    {"frames_omitted": omitted},
                    *frames[-_FRAMES_KEPT:],
                ]
                return True
    elif isinstance(exception, str):
        lines = exception.splitlines()
        if len(lines) > 4 * _FRAMES_KEPT + 1:
            omitted = len(lines) - 4 * _FRAMES_KEPT
            line["exception"] = "\n".join(
                [
                    *lines[: 2 * _FRAMES_KEPT],
                    f"... {omitted} lines cut ...",
                    *lines[-2 * _FRAMES_KEPT :],
                ]
            )
            return True
    candidates = [
        (len(value), key)
        for key, value in line.items()
        if isinstance(value, str) and key not in _FIXED_FIELDS and len(value) > 64
    ]
    if not candidates:
        return False
    length, key = max(candidates)
    keep = max(64, length - excess - 32)
    if keep >= length:
        return False
    line[key] = line[key][:keep] + _TRUNCATED.format(length - keep)
    return True


# The fields that say what a line is: never shortened.
_FIXED_FIELDS = frozenset({"timestamp", "level", "logger", "service", "environment"})


class _JSONRenderer:
    def __init__(self, redactor: Callable[[], Redactor], max_bytes: int | None = None) -> None:
        self._redactor = redactor
        self._max_bytes = max_bytes

    def _default(self, value: Any) -> Any:
        try:
            text = str(value)
        except Exception:  # a value whose __str__ raises still leaves a line behind
            text = f"<{type(value).__name__} that cannot be shown>"
        return self._redactor().redact_text(text)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> str:
        rendered = self._render(event_dict)
        limit = self._max_bytes
        # Characters are at most 4 bytes: most lines are known to fit without encoding.
        if limit is None or len(rendered) * 4 <= limit:
            return rendered
        return self._fit(event_dict, rendered, limit)

    def _render(self, event_dict: EventDict) -> str:
        try:
            return orjson.dumps(
                event_dict, default=self._default, option=orjson.OPT_NON_STR_KEYS
            ).decode()
        except orjson.JSONEncodeError:
            # Integers beyond 64 bits and the like: fall back to the standard library.
            import json

            return json.dumps(event_dict, default=self._default)

    def _fit(self, event_dict: EventDict, rendered: str, limit: int) -> str:
        """*rendered* shortened to at most *limit* bytes, still one JSON object."""
        size = len(rendered.encode("utf-8", "replace"))
        if size <= limit:
            return rendered
        line = dict(event_dict)
        for _ in range(32):  # each round cuts a traceback or the longest value
            if not _shorten(line, size - limit):
                break
            rendered = self._render(line)
            size = len(rendered.encode("utf-8", "replace"))
            if size <= limit:
                return rendered
        # Nothing left to cut (many small fields): say so rather than write it whole.
        kept = {key: event_dict[key] for key in ("timestamp", "level") if key in event_dict}
        kept["event"] = str(event_dict.get("event", ""))[:256]
        kept["logger"] = event_dict.get("logger")
        kept["truncated"] = f"the line was {size} bytes, above LOG_MAX_LINE_BYTES={limit}"
        return self._render(kept)


# --- stdlib bridge -------------------------------------------------------------------


class _BridgeHandler(logging.Handler):
    """Root handler: formats stdlib records with the structlog pipeline into the sink."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except DropEvent:
            return
        except Exception as exc:  # a record that cannot be formatted is dropped, not raised
            _sink.drop(f"formatting a {record.name} record raised {type(exc).__name__}")
            return
        _sink.write(line)


@dataclass
class _StdlibState:
    root_handlers: list[logging.Handler]
    root_level: int
    levels: dict[str, int] = field(default_factory=dict)
    adopted: dict[str, tuple[list[logging.Handler], bool]] = field(default_factory=dict)


# --- configuration ---------------------------------------------------------------------


class _Pipeline:
    """The one processor structlog sees: runs the configured steps in order.

    Reconfiguring replaces ``steps`` (a tuple) in one assignment, and a call reads it
    once, so an event in flight runs either the old steps or the new ones, never a mix
    that skips the redaction step. A step that raises drops the event (counted and
    reported like a failed write): a log call never raises into its caller.
    """

    __slots__ = ("steps",)

    def __init__(self) -> None:
        self.steps: tuple[Processor, ...] = ()

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
        result: Any = event_dict
        step: Processor | None = None
        try:
            for step in self.steps:
                result = step(logger, method_name, result)
        except DropEvent:
            raise
        except Exception as exc:
            where = type(step).__name__ if step is not None else "a step"
            _sink.drop(f"the log pipeline step {where} raised {type(exc).__name__}")
            raise DropEvent from None
        return result


_pipeline = _Pipeline()
# One list object for the whole process, holding the pipeline: structlog loggers cached
# on first use keep a reference to it; what changes is the pipeline's steps.
_processors: list[Processor] = [_pipeline]
_lock = threading.RLock()
_stdlib_state: _StdlibState | None = None
_handler: _BridgeHandler | None = None
_configured = False


@dataclass
class _LevelByLogger:
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
        level = _LEVEL_NUMBER.get(_METHOD_LEVEL.get(method_name, "info"), logging.INFO)
        if level < self.threshold(str(getattr(logger, "name", ""))):
            raise DropEvent
        return event_dict


def _is_terminal(stream: TextIO | None) -> bool:
    target = stream if stream is not None else sys.stdout
    isatty = getattr(target, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def configure_logging(
    settings: Settings | None = None,
    *,
    level: str | int | None = None,
    format: Format | None = None,
    levels: Mapping[str, str | int] | None = None,
    stream: TextIO | None = None,
    traceback_locals: bool | None = None,
) -> None:
    """Make every log line of the process structured, contextual and redacted.

    Reads ``LOG_LEVEL``, ``LOG_FORMAT``, ``LOG_LEVELS`` and ``LOG_TRACEBACK_LOCALS``
    from *settings* (default: the active settings); the keyword arguments override
    them. *stream* defaults to ``sys.stdout`` as it is when each line is written.
    Standard-library loggers are routed through the same pipeline (the root logger gets
    one handler; previous root handlers are set aside until `reset_logging()`).
    Safe to call again: the last call wins, for loggers created before it too.

    Raises `ValueError` for an unknown level or format.

    Examples:
        >>> import io
        >>> configure_logging(level="INFO", format="json", stream=io.StringIO())
        >>> get_logger("billing").debug("not written")  # costs almost nothing
    """
    global _handler, _configured, _stdlib_state
    settings = settings if settings is not None else get_settings()
    root_level = _level_number(level if level is not None else settings.log_level, "level")
    chosen_format = format if format is not None else settings.log_format
    if chosen_format not in ("json", "console", "auto"):
        raise ValueError(f"unknown log format {chosen_format!r}; use 'json', 'console' or 'auto'")
    per_logger = {
        name: _level_number(value, f"level of logger {name!r}")
        for name, value in (levels if levels is not None else settings.log_levels).items()
    }
    show_locals = (
        traceback_locals
        if traceback_locals is not None
        else bool(getattr(settings, "log_traceback_locals", False))
    )
    structured = chosen_format == "json" or (chosen_format == "auto" and not _is_terminal(stream))

    redactor = Redactor.from_settings(settings)
    finisher = _Finisher(settings, redactor)
    renderer: Processor = (
        _JSONRenderer(finisher.redactor, getattr(settings, "log_max_line_bytes", None))
        if structured
        else structlog.dev.ConsoleRenderer(colors=_is_terminal(stream), sort_keys=False)
    )
    tail: list[Processor] = [
        _report,
        _ExceptionFormatter(structured=structured, show_locals=show_locals),
        finisher,
        renderer,
    ]
    min_level = min([root_level, *per_logger.values()])
    native: list[Processor] = [_merge_request_context]
    if per_logger:
        native.append(_LevelByLogger(per_logger, root_level))

    with _lock:
        _sink.stream = stream
        _pipeline.steps = (*native, *tail)
        _set_min_level(min_level)
        structlog.configure(
            processors=_processors,
            wrapper_class=_LevelledLogger,
            context_class=dict,
            logger_factory=_logger_factory,
            cache_logger_on_first_use=True,
        )
        formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_merge_request_context, structlog.stdlib.ExtraAdder()],
            processors=tail,
        )
        root = logging.getLogger()
        if _stdlib_state is None:
            _stdlib_state = _StdlibState(root_handlers=list(root.handlers), root_level=root.level)
        if _handler is None:
            _handler = _BridgeHandler()
        _handler.setFormatter(formatter)
        root.handlers = [_handler]
        root.setLevel(root_level)
        for name, previous in _stdlib_state.levels.items():
            if name not in per_logger:
                logging.getLogger(name).setLevel(previous)
        for name, number in per_logger.items():
            target = logging.getLogger(name)
            _stdlib_state.levels.setdefault(name, target.level)
            target.setLevel(number)
        for name in _ADOPTED_LOGGERS:
            target = logging.getLogger(name)
            if target.handlers or not target.propagate:
                _stdlib_state.adopted.setdefault(name, (list(target.handlers), target.propagate))
                target.handlers = []
                target.propagate = True
        _configured = True


def _level_number(value: str | int, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _LEVELS.get(str(value).strip().upper())
    if number is None:
        raise ValueError(
            f"unknown log {what}: {value!r}; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
        )
    return number


def is_logging_configured() -> bool:
    """True between `configure_logging()` and `reset_logging()`."""
    return _configured


def reset_logging() -> None:
    """Undo `configure_logging()`: structlog back to its defaults, the root logger's
    previous handlers and level restored, per-logger levels and adopted loggers restored.
    """
    global _configured, _stdlib_state
    with _lock:
        if _stdlib_state is not None:
            root = logging.getLogger()
            root.handlers = list(_stdlib_state.root_handlers)
            root.setLevel(_stdlib_state.root_level)
            for name, previous in _stdlib_state.levels.items():
                logging.getLogger(name).setLevel(previous)
            for name, (handlers, propagate) in _stdlib_state.adopted.items():
                target = logging.getLogger(name)
                target.handlers = handlers
                target.propagate = propagate
            _stdlib_state = None
        structlog.reset_defaults()
        # Loggers cached while configured keep our objects: make them behave like
        # structlog's defaults (everything printed to stdout, console renderer).
        _pipeline.steps = tuple(structlog.get_config()["processors"])
        _set_min_level(logging.NOTSET)
        _sink.stream = None
        _sink.failures.reset()
        _forwarding_failures.reset()
        _captures.clear()
        _configured = False


@contextmanager
def capture_events() -> Iterator[list[EventDict]]:
    """Collect the final event dicts (after redaction and layout) instead of writing them.

    Configures logging from the active settings for the block when it is not configured.
    """
    configured_here = not _configured
    if configured_here:
        configure_logging()
    captured: list[EventDict] = []
    with _lock:
        _captures.append(captured)
    try:
        yield captured
    finally:
        with _lock:
            if any(c is captured for c in _captures):
                _captures[:] = [c for c in _captures if c is not captured]
        if configured_here:
            reset_logging()


def use_process_lock(fd: int | None) -> None:
    """Serialise writes with the other processes that share the file descriptor *fd*
    (opened once, before they were forked), so long lines from several processes on
    one pipe never interleave; ``None`` stops doing so."""
    _sink.process_lock = None if fd is None else _ProcessLock(fd)


@after_fork_in_child
def _reset_after_fork() -> None:
    global _lock
    _lock = threading.RLock()
    _sink.reset_after_fork()
    _forwarding_failures.reset()


@atexit.register
def _report_failures_at_exit() -> None:
    _sink.failures.report_remaining()
    _forwarding_failures.report_remaining()
