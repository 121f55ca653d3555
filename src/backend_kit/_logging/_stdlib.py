"""The bridge from the standard library's logging into the same pipeline and sink."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from structlog.exceptions import DropEvent

from ._sink import sink

# Stdlib loggers that servers set up with their own handlers and propagate=False; they
# are pointed at the root handler so their lines look like everyone else's.
ADOPTED_LOGGERS = (
    "gunicorn.error",
    "gunicorn.access",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)


class BridgeHandler(logging.Handler):
    """Root handler: formats stdlib records with the structlog pipeline into the sink."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except DropEvent:
            return
        except Exception as exc:  # a record that cannot be formatted is dropped, not raised
            sink.drop(f"formatting a {record.name} record raised {type(exc).__name__}")
            return
        sink.write(line)


@dataclass
class StdlibState:
    root_handlers: list[logging.Handler]
    root_level: int
    levels: dict[str, int] = field(default_factory=dict)
    adopted: dict[str, tuple[list[logging.Handler], bool]] = field(default_factory=dict)
