"""`capture_events`: the finished events of a block, collected instead of written."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from structlog.typing import EventDict

from .._forksafe import after_fork_in_child
from ._config import configure_logging, is_logging_configured, reset_logging
from ._processors import captures

_lock = threading.Lock()


@contextmanager
def capture_events() -> Iterator[list[EventDict]]:
    """Collect the final event dicts (after redaction and layout) instead of writing them.

    Configures logging from the active settings for the block when it is not configured.
    """
    configured_here = not is_logging_configured()
    if configured_here:
        configure_logging()
    captured: list[EventDict] = []
    with _lock:
        captures.append(captured)
    try:
        yield captured
    finally:
        with _lock:
            if any(c is captured for c in captures):
                captures[:] = [c for c in captures if c is not captured]
        if configured_here:
            reset_logging()


@after_fork_in_child
def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
