"""Structured logging: one pipeline for structlog and the standard library.

`configure_logging()` builds the pipeline once: request context is merged, errors are
forwarded to Sentry when it is configured, exceptions are formatted (without frame
locals unless asked), the redaction policy runs over the whole event, and one renderer
(JSON via orjson, or structlog's console renderer) writes one line per event. Records
of standard-library loggers (``werkzeug``, ``django.request``, ``gunicorn.error``,
``urllib3``...) reach the same processors through structlog's ``ProcessorFormatter``.

Loggers that structlog cached on first use keep pointing at the same objects, whose
steps are swapped in one assignment, so calling `configure_logging()` again (or
`reset_logging()`) takes effect for them too, and an event in flight never sees half
of each. A log call never raises: a step that fails or a write that fails drops the
line, counts it, and says so on stderr at most once per interval.

The package, by concern: `_sink` (where lines are written), `_clock` (timestamps),
`_processors` (the steps of the pipeline), `_render` (the JSON line), `_stdlib` (the
bridge from the standard library), `_config` (building, installing and undoing the
pipeline) and `_capture` (collecting events in tests).
"""

from __future__ import annotations

from ._capture import capture_events
from ._config import (
    EventWriter,
    configure_logging,
    get_logger,
    is_logging_configured,
    reset_logging,
)
from ._processors import EventReporter, exc_info_of, set_event_reporter
from ._sink import ProcessLock, forwarding_failures, sink, use_process_lock

__all__ = [
    "EventReporter",
    "EventWriter",
    "ProcessLock",
    "capture_events",
    "configure_logging",
    "exc_info_of",
    "forwarding_failures",
    "get_logger",
    "is_logging_configured",
    "reset_logging",
    "set_event_reporter",
    "sink",
    "use_process_lock",
]
