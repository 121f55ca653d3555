"""``backend-kit health … --url`` as a real process against loopback servers: a refused
token, a page that is no health report, redirects and plain-http tokens."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.health_support import http_status_server

TOKEN = "cli-token-canary-5150"
REPORT = json.dumps({"status": "pass", "checks": {}}).encode()


def run_cli(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_KIT_", "HEALTH_"))}
    if token is not None:
        env["HEALTH_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "backend_kit.cli", "health", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@contextmanager
def recording_server(
    respond: Any,
) -> Iterator[tuple[str, list[tuple[str, str | None]]]]:
    """A loopback server; *respond(handler)* answers each GET. Yields the base URL and
    every (path, Authorization) it saw."""
    seen: list[tuple[str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            respond(self)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_is_its_own_error(status: int) -> None:
    with http_status_server(status, b'{"detail": "no"}', "application/json") as base:
        result = run_cli("report", "--url", base)
    assert result.returncode == 1
    assert f"the health token was refused (HTTP {status})" in result.stderr
    assert result.stdout == ""  # no empty table
    assert TOKEN not in result.stdout + result.stderr


def test_without_a_token_a_401_says_to_set_one() -> None:
    with http_status_server(401, b"", "text/plain") as base:
        result = run_cli("ready", "--url", base, token=None)
    assert result.returncode == 1
    assert "asks for a health token (HTTP 401); set HEALTH_TOKEN" in result.stderr


def test_a_failure_prints_the_http_status() -> None:
    with http_status_server(503, b'{"status": "fail"}', "application/health+json") as base:
        result = run_cli("ready", "--url", base)
    assert result.returncode == 1
    assert result.stdout == "ready: fail (HTTP 503)\n"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html>Welcome</html>", "text/html"),
        (b'{"ok": true}', "application/json"),
        (b'{"status": "ok"}', "application/json"),
        (b"[1, 2]", "application/json"),
    ],
)
def test_any_200_is_not_a_pass(body: bytes, content_type: str) -> None:
    with http_status_server(200, body, content_type) as base:
        result = run_cli("ready", "--url", f"{base}/some/other/page")
    assert result.returncode == 1
    assert "HTTP 200, and the response is not a health report" in result.stderr


def test_a_health_report_on_a_custom_path_passes() -> None:
    with http_status_server(200, REPORT, "application/health+json") as base:
        result = run_cli("ready", "--url", f"{base}/ops/readyz")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ready: pass\n"


def test_no_redirect_is_followed_with_the_token() -> None:
    with recording_server(lambda h: _answer(h, 200, REPORT)) as (target, target_seen):

        def redirect(handler: http.server.BaseHTTPRequestHandler) -> None:
            handler.send_response(302)
            handler.send_header("Location", f"{target}/readyz")
            handler.send_header("Content-Length", "0")
            handler.end_headers()

        with recording_server(redirect) as (base, seen):
            result = run_cli("ready", "--url", base)
    assert result.returncode == 1
    assert "HTTP 302: a redirect, which is not followed" in result.stderr
    assert seen == [("/readyz", f"Bearer {TOKEN}")]
    assert target_seen == []  # the token never reached the redirect's target


def _answer(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", "application/health+json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_the_token_goes_to_loopback_but_not_in_clear_elsewhere() -> None:
    with recording_server(lambda h: _answer(h, 200, REPORT)) as (base, seen):
        assert run_cli("ready", "--url", base).returncode == 0
        localhost = base.replace("127.0.0.1", "localhost")
        assert run_cli("ready", "--url", localhost).returncode == 0
    assert seen == [("/readyz", f"Bearer {TOKEN}")] * 2
    # Not a loopback address, plain http: refused before any connection is made.
    # (192.0.2.0/24 is reserved for documentation; nothing is ever sent there.)
    result = run_cli("ready", "--url", "http://192.0.2.10:8000", "--timeout", "0.5")
    assert result.returncode == 2
    assert "HEALTH_TOKEN is not sent in clear over http:// to 192.0.2.10" in result.stderr
    assert "--allow-insecure-token" in result.stderr
    assert TOKEN not in result.stderr
