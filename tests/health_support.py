"""Shared pieces of the health tests: counting checks, a loopback HTTP server, the schema."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jsonschema

from backend_kit.health import HealthCheck, HealthReport

SCHEMA = json.loads((Path(__file__).parent / "health_response_schema.json").read_text())


def assert_valid_health_json(data: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(data)


def assert_report_valid(report: HealthReport) -> None:
    assert_valid_health_json(json.loads(report.to_json(detailed=True)))
    assert_valid_health_json(json.loads(report.to_json(detailed=False)))


class Spy:
    """A check body that counts its calls; it can wait for a release (a hung dependency)
    or fail."""

    def __init__(self, *, hang: bool = False, fail: str | None = None, delay: float = 0.0) -> None:
        self.calls = 0
        self.hang = hang
        self.fail = fail
        self.delay = delay
        self.release = threading.Event()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.calls += 1
        if self.hang:
            self.release.wait(30)
        elif self.delay:
            self.release.wait(self.delay)
        if self.fail is not None:
            raise RuntimeError(self.fail)
        return 1.0

    def check(self, name: str, **options: Any) -> HealthCheck:
        return HealthCheck(name, run=self, **options)


@contextmanager
def http_status_server(
    status: int = 200, body: bytes = b"ok", content_type: str = "text/plain"
) -> Iterator[str]:
    """A loopback HTTP server answering every GET with *status*; yields its base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.server.seen_headers.append(dict(self.headers))  # type: ignore[attr-defined]
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.seen_headers = []  # type: ignore[attr-defined]
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
