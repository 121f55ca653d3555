"""Jobs for the RQ worker test (``rq worker -w backend_kit.rq.ContextWorker``)."""

from __future__ import annotations

import os
from typing import Any

import backend_kit

log = backend_kit.get_logger("tests.rq_jobs")


def echo(*args: Any, **kwargs: Any) -> str:
    log.info("echo_ran", arg_count=len(args) + len(kwargs))
    return "ok"


def fail(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("the payment provider said no")


def flaky(marker: str) -> str:
    """Fails on its first run (a file marks that it ran), succeeds on the second."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("first run fails")
    return "ok"
