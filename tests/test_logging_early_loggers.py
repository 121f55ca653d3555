"""Loggers made before configure_logging() follow every later configuration."""

from __future__ import annotations

import io

import orjson
import structlog
from structlog.testing import capture_logs as structlog_capture_logs

from backend_kit import configure_logging, get_logger
from backend_kit._logging import reset_logging

EARLY = get_logger("early.module", component="billing")


def test_a_logger_made_before_configuration_follows_each_configuration() -> None:
    stream = io.StringIO()
    configure_logging(level="INFO", format="json", stream=stream)
    EARLY.debug("filtered")
    EARLY.info("kept", order=7)
    configure_logging(level="DEBUG", format="json", stream=stream)
    EARLY.debug("now_kept")
    configure_logging(level="ERROR", format="json", stream=stream)
    EARLY.warning("filtered_again")
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["level"], line["logger"]) for line in lines] == [
        ("kept", "info", "early.module"),
        ("now_kept", "debug", "early.module"),
    ]
    assert lines[0]["component"] == "billing"
    assert lines[0]["order"] == 7


def test_the_filtered_methods_are_no_ops_chosen_at_configure_time() -> None:
    configure_logging(level="WARNING", format="json", stream=io.StringIO())
    # Not structlog's lazy proxy: the method is looked up on the logger's class.
    assert not isinstance(EARLY, structlog._config.BoundLoggerLazyProxy)
    assert EARLY.debug("x") is None
    assert EARLY.info("x") is None
    assert type(EARLY).debug is type(EARLY).info


def test_before_configuration_structlog_processors_apply() -> None:
    reset_logging()
    with structlog_capture_logs() as events:
        EARLY.info("seen_by_structlog", n=1)
    assert events == [
        {"event": "seen_by_structlog", "n": 1, "component": "billing", "log_level": "info"}
    ]
