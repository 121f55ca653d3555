"""Events the Sentry transport drops are counted, warned about once per interval, and
shown in the detailed health report: sentry-sdk's real HTTP transport against loopback
endpoints that fail in each way."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from backend_kit import configure_logging, configure_sentry, get_logger, load_settings
from backend_kit._sentry import dropped_sentry_events, reset_sentry
from backend_kit.health import HealthRegistry, HealthRunner, checks_from_settings, sentry_check

from .servers import free_port, silent_tcp_server


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    reset_sentry(timeout=0)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _configure(dsn: str, *, interval: float = 60.0) -> io.StringIO:
    settings = load_settings(sentry_dsn=dsn)
    stream = io.StringIO()
    configure_logging(settings, format="json", stream=stream)
    assert configure_sentry(settings, shutdown_timeout=0.5, drop_warning_interval=interval)
    return stream


def _wait_until(predicate: Any, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {dropped_sentry_events()}")
        time.sleep(0.02)


@contextmanager
def _status_server(status: int, headers: dict[str, str]) -> Iterator[tuple[str, list[int]]]:
    seen: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(status)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://publickey@127.0.0.1:{server.server_address[1]}/1", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_an_endpoint_that_never_answers_fills_the_queue_and_drops_are_warned_once() -> None:
    before = dropped_sentry_events().total
    with silent_tcp_server() as port:
        stream = _configure(f"http://publickey@127.0.0.1:{port}/1")
        log = get_logger("payments")
        started = time.monotonic()
        for index in range(300):
            log.error("charge_failed", index=index)
        assert time.monotonic() - started < 10  # dropping never blocks the caller
        drops = dropped_sentry_events()
        # sentry-sdk's queue holds 100 envelopes and one is in flight: the rest overflow.
        assert drops.total - before >= 150
        assert drops.by_reason.get("queue_overflow", 0) >= 150
        lines = _lines(stream)
        warnings = [line for line in lines if line["event"] == "sentry_events_dropped"]
        assert len(lines) == 300 + len(warnings)  # every line counted, none lost
        assert len(warnings) == 1  # one per interval, however many drops
        assert warnings[0]["level"] == "warning"
        assert warnings[0]["dropped"] == 1  # the first drop is reported at once
    # The server is gone: the queued events now fail at once. Every event is accounted
    # for as dropped, none twice.
    _wait_until(lambda: dropped_sentry_events().total - before == 300, timeout=30)
    reset_sentry(timeout=0)  # reports what the interval held back
    lines = _lines(stream)
    warnings = [line for line in lines if line["event"] == "sentry_events_dropped"]
    assert len(warnings) == 2
    assert sum(w["dropped"] for w in warnings) == 300
    assert warnings[1]["total"] - before == 300
    assert set(warnings[1]["reasons"]) <= {"queue_overflow", "network_error"}


def test_an_unreachable_endpoint_counts_every_event_as_a_network_error() -> None:
    before = dropped_sentry_events().by_reason.get("network_error", 0)
    stream = _configure(f"http://publickey@127.0.0.1:{free_port()}/1", interval=0.2)
    log = get_logger("payments")
    for index in range(5):
        log.error("charge_failed", index=index)
        time.sleep(0.25)  # one interval apart: each drop gets its own warning
    _wait_until(lambda: dropped_sentry_events().by_reason.get("network_error", 0) - before == 5)
    time.sleep(0.3)
    drops = dropped_sentry_events()
    assert drops.by_reason["network_error"] - before == 5  # no more, no fewer
    reset_sentry(timeout=0)
    warnings = [line for line in _lines(stream) if line["event"] == "sentry_events_dropped"]
    assert sum(w["dropped"] for w in warnings) == 5
    assert all(w["reasons"] == {"network_error": w["dropped"]} for w in warnings)


def test_a_rate_limited_endpoint_counts_refused_and_held_back_events() -> None:
    before = dropped_sentry_events().total
    with _status_server(429, {"Retry-After": "60"}) as (dsn, seen):
        _configure(dsn)
        log = get_logger("payments")
        log.error("first")
        _wait_until(lambda: len(seen) == 1)
        for index in range(4):
            log.error("later", index=index)
        _wait_until(lambda: dropped_sentry_events().total - before == 5)
        drops = dropped_sentry_events()
        assert drops.by_reason["rate_limited"] >= 1
        assert drops.by_reason["ratelimit_backoff"] >= 4
        assert len(seen) == 1  # held back by the client, not sent again


def test_the_detailed_health_report_shows_drops() -> None:
    before = dropped_sentry_events().total
    with silent_tcp_server() as port:
        dsn = f"http://publickey@127.0.0.1:{port}/1"
        _configure(dsn)
        registry = checks_from_settings(load_settings(sentry_dsn=dsn))
        assert [check.key for check in registry] == ["sentry:droppedEvents"]
        for index in range(200):
            get_logger("x").error("e", index=index)
        report = HealthRunner(registry, cache_seconds=0).ready()
    _wait_until(lambda: dropped_sentry_events().total - before == 200, timeout=30)
    assert (report.status, report.http_status) == ("warn", 200)  # non-critical
    detailed = json.loads(report.to_json(detailed=True))
    (entry,) = detailed["checks"]["sentry:droppedEvents"]
    assert entry["status"] == "fail"
    assert "events dropped since start (" in entry["output"]
    assert "queue_overflow: " in entry["output"]
    assert "Sentry is not receiving them" in entry["output"]


def test_sentry_check_passes_once_an_interval_passes_without_drops() -> None:
    with silent_tcp_server() as port:
        _configure(f"http://publickey@127.0.0.1:{port}/1", interval=0.3)
        time.sleep(0.4)  # earlier tests' drops are older than the interval now
        result = HealthRunner(HealthRegistry([sentry_check()]), cache_seconds=0).ready().checks[0]
    assert result.status == "pass", result.output
    assert result.observation is not None
    assert result.observation.unit == "events"
    assert result.observation.value == dropped_sentry_events().total
