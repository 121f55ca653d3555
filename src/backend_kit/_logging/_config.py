"""`configure_logging`, `reset_logging` and `get_logger`: the pipeline built from the
settings, installed for structlog and the standard library, and undone."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TextIO, cast

import structlog
from structlog.exceptions import DropEvent
from structlog.typing import FilteringBoundLogger, Processor

from .._active import get_settings, state_lock
from .._redact import Redactor
from ._clock import clock
from ._processors import (
    LEVELS,
    ExceptionFormatter,
    Finisher,
    LevelByLogger,
    Pipeline,
    captures,
    merge_request_context,
    report_to_sentry,
)
from ._render import JSONRenderer
from ._sink import forwarding_failures, sink
from ._stdlib import ADOPTED_LOGGERS, BridgeHandler, StdlibState

if TYPE_CHECKING:
    from .._settings import Settings

Format = Literal["json", "console", "auto"]


# The lowest level any logger writes at; `_set_min_level` keeps it.
_min_level = logging.NOTSET


class _LevelledLogger(structlog.BoundLoggerBase):
    """A filtering bound logger whose level can be changed in place.

    Its methods are copied from structlog's filtering logger for the configured level, so
    a call below the level is a method that returns ``None`` at once; re-copying them
    on reconfiguration reaches loggers that structlog already cached.
    """


def _set_min_level(level: int) -> None:
    global _min_level
    _min_level = level
    source = structlog.make_filtering_bound_logger(level)
    for name, member in vars(source).items():
        if not name.startswith("__"):
            setattr(_LevelledLogger, name, member)


_set_min_level(logging.NOTSET)


class _NamedLogger:
    """What structlog wraps: a name (for the ``logger`` field) and the shared sink."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, message: str) -> None:
        sink.write(message)

    debug = info = warning = warn = error = critical = fatal = exception = log = msg


def _caller_module(depth: int) -> str:
    frame: FrameType | None = sys._getframe(depth)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if not module.startswith(("structlog", "backend_kit._logging")):
            return module or "root"
        frame = frame.f_back
    return "root"


def _logger_factory(*args: Any) -> _NamedLogger:
    name = args[0] if args and isinstance(args[0], str) else _caller_module(2)
    return _NamedLogger(name)


def get_logger(name: str | None = None, **initial_values: Any) -> FilteringBoundLogger:
    """A structlog logger named *name* (default: the calling module's ``__name__``).

    Works before `configure_logging()` too (structlog's processors apply until then), and
    a logger made before it follows every later `configure_logging()` and
    `reset_logging()`. Extra keyword arguments are bound to every line of this logger.

    Examples:
        >>> log = get_logger("billing", component="invoices")
        >>> log.info("invoice_sent", invoice_id=42)  # doctest: +SKIP
    """
    if name is None:
        name = _caller_module(2)
    if not _configured and structlog.is_configured():
        # The application configured structlog itself: its configuration (logger
        # factory, wrapper class) is in charge until configure_logging().
        return cast(FilteringBoundLogger, structlog.get_logger(name, **initial_values))
    # Our own bound logger rather than structlog's lazy proxy, which looks the
    # configuration up again on every attribute access: the level's methods live on
    # the class (a filtered call is a no-op method), and the one processor it holds,
    # the pipeline, is what reconfiguration changes.
    return cast(
        FilteringBoundLogger,
        _LevelledLogger(_NamedLogger(name), _processors, initial_values),
    )


class EventWriter:
    """Writes the events of one logger straight into the configured pipeline.

    What a bound logger's method does (level check, the pipeline, one write), without
    structlog's generic dispatch around it: the request core writes one line per
    request through it. The event runs the very steps every other line runs, so the
    line is the same, redacted the same, reported to Sentry the same and captured the
    same. Before `configure_logging()`, or when the processor list structlog holds was
    changed, the event goes to an ordinary logger instead.
    """

    __slots__ = ("_fallback", "_logger")

    def __init__(self, name: str) -> None:
        self._logger = _NamedLogger(name)
        self._fallback = get_logger(name)

    def enabled(self, level: int) -> bool:
        """False when an event at *level* (a stdlib level number) would be dropped by
        the process-wide minimum level; a cheap test before building the fields."""
        return level >= _min_level or not _configured

    def write(self, method_name: str, level: int, event: str, fields: dict[str, Any]) -> None:
        """Emit *event* with *fields* (a fresh dict, consumed) as ``log.<method_name>``
        would, *level* being that method's level number. Never raises."""
        if not _configured or len(_processors) != 1 or _processors[0] is not _pipeline:
            getattr(self._fallback, method_name)(event, **fields)
            return
        if level < _min_level:
            return
        fields["event"] = event
        direct = _direct
        if (
            direct is None
            or _pipeline.steps is not direct.steps
            or "exc_info" in fields
            or "stack_info" in fields
            or "_record" in fields
            or "_from_structlog" in fields
        ):
            try:
                line = _pipeline(self._logger, method_name, fields)
            except DropEvent:
                return
            if isinstance(line, str):  # what both renderers give
                sink.write(line)
            return
        # The default JSON pipeline, its steps called directly: the same steps in the
        # same order, minus those with nothing to do for an event without exc_info.
        logger = self._logger
        step: str = "merge_request_context"
        try:
            merge_request_context(logger, method_name, fields)
            step = "report_to_sentry"
            report_to_sentry(logger, method_name, fields)
            step = "Finisher"
            line = direct.finisher.layout(logger.name, clock.stamp(), method_name, fields)
            step = "JSONRenderer"
            data = direct.renderer.render_line(line)
        except DropEvent:
            return
        except Exception as exc:  # as the pipeline does: dropped, counted, never raised
            sink.drop(f"the log pipeline step {step} raised {type(exc).__name__}")
            return
        # The same line as bytes: to a plain UTF-8 file or pipe, one os.write.
        sink.write_bytes(data)


class _DirectSteps(NamedTuple):
    """The default JSON pipeline's steps, and the two of them `EventWriter` calls by name."""

    steps: tuple[Processor, ...]
    finisher: Finisher
    renderer: JSONRenderer


_direct: _DirectSteps | None = None


_pipeline = Pipeline()
# One list object for the whole process, holding the pipeline: structlog loggers cached
# on first use keep a reference to it; what changes is the pipeline's steps.
_processors: list[Processor] = [_pipeline]
_stdlib_state: StdlibState | None = None
_handler: BridgeHandler | None = None
_configured = False
# The user's own structlog configuration from before the first configure_logging(), put
# back by reset_logging(); None when structlog was on its defaults.
_previous_structlog: dict[str, Any] | None = None


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
    global _handler, _configured, _stdlib_state, _previous_structlog, _direct
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
    finisher = Finisher(settings, redactor)
    renderer: Processor = (
        JSONRenderer(finisher.redactor, getattr(settings, "log_max_line_bytes", None))
        if structured
        else structlog.dev.ConsoleRenderer(colors=_is_terminal(stream), sort_keys=False)
    )
    tail: list[Processor] = [
        report_to_sentry,
        ExceptionFormatter(structured=structured, show_locals=show_locals),
        finisher,
        renderer,
    ]
    min_level = min([root_level, *per_logger.values()])
    native: list[Processor] = [merge_request_context]
    if per_logger:
        native.append(LevelByLogger(per_logger, root_level))

    steps = (*native, *tail)
    direct = (
        _DirectSteps(steps, finisher, renderer)
        if isinstance(renderer, JSONRenderer) and native == [merge_request_context]
        else None
    )
    with state_lock():
        sink.stream = stream
        _pipeline.steps = steps
        _direct = direct
        _set_min_level(min_level)
        if not _configured:
            _previous_structlog = (
                dict(structlog.get_config()) if structlog.is_configured() else None
            )
        structlog.configure(
            processors=_processors,
            wrapper_class=_LevelledLogger,
            context_class=dict,
            logger_factory=_logger_factory,
            cache_logger_on_first_use=True,
        )
        formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[merge_request_context, structlog.stdlib.ExtraAdder()],
            processors=tail,
        )
        root = logging.getLogger()
        if _stdlib_state is None:
            _stdlib_state = StdlibState(root_handlers=list(root.handlers), root_level=root.level)
        if _handler is None:
            _handler = BridgeHandler()
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
        for name in ADOPTED_LOGGERS:
            target = logging.getLogger(name)
            if target.handlers or not target.propagate:
                _stdlib_state.adopted.setdefault(name, (list(target.handlers), target.propagate))
                target.handlers = []
                target.propagate = True
        _configured = True


def _level_number(value: str | int, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = LEVELS.get(str(value).strip().upper())
    if number is None:
        raise ValueError(
            f"unknown log {what}: {value!r}; use one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
        )
    return number


def is_logging_configured() -> bool:
    """True between `configure_logging()` and `reset_logging()`."""
    return _configured


def reset_logging() -> None:
    """Undo `configure_logging()`: structlog's configuration as it was before (its
    defaults, or the user's own), the root logger's previous handlers and level, and
    per-logger levels and adopted loggers restored.
    """
    global _configured, _stdlib_state, _previous_structlog, _direct
    with state_lock():
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
        if _configured and _previous_structlog is not None:
            structlog.configure(**_previous_structlog)
        else:
            structlog.reset_defaults()
        _previous_structlog = None
        # Loggers made or cached while configured keep our objects: make them run
        # whatever structlog is configured with from now on.
        _pipeline.steps = None
        _direct = None
        _set_min_level(logging.NOTSET)
        sink.stream = None
        sink.failures.reset()
        forwarding_failures.reset()
        captures.clear()
        _configured = False
