"""The ASGI adapter: the FastAPI example over real HTTP under uvicorn, and what only an
ASGI server lets the app do (close the connection while draining)."""

from __future__ import annotations

import asyncio
import http.client
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from backend_kit import current_request_id, load_settings
from backend_kit.asgi import BackendKitMiddleware
from backend_kit.health._lifecycle import reset_lifecycle, start_draining
from backend_kit.testing import capture_logs
from tests.servers import free_port, wait_for_port

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app"
TOKEN = "Bearer notes-fastapi-token"


class Uvicorn:
    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        env = {**os.environ, "ENVIRONMENT": "development", "LOG_FORMAT": "json"}
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=EXAMPLE,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, timeout=30)

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    def lines(self) -> list[dict[str, Any]]:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@pytest.fixture
def uvicorn_example(tmp_path: Path) -> Iterator[Uvicorn]:
    server = Uvicorn(tmp_path / "uvicorn.log")
    try:
        yield server
    finally:
        server.stop()


def test_the_fastapi_example_over_real_http(uvicorn_example: Uvicorn) -> None:
    server = uvicorn_example
    status, headers, _ = server.request("PUT", "/notes/a?text=hi")
    assert status == 401  # the app-wide dependency
    assert len(headers["x-request-id"]) == 32
    status, headers, body = server.request(
        "PUT", "/notes/a?text=hi", {"Authorization": TOKEN, "X-Request-ID": "note-1"}
    )
    assert status == 200
    assert headers["x-request-id"] == "note-1"
    assert orjson.loads(body) == {"name": "a", "request_id": "note-1"}
    status, headers, body = server.request("GET", "/livez", {"X-Request-ID": "probe-1"})
    assert (status, orjson.loads(body)["status"]) == (200, "pass")
    assert headers["x-request-id"] == "probe-1"
    status, _, _ = server.request("GET", "/readyz")
    assert status == 200
    status, _, _ = server.request("GET", "/notes/missing", {"Authorization": TOKEN})
    assert status == 404

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        finished = [line for line in server.lines() if line.get("event") == "request_finished"]
        if len(finished) >= 3:  # probes are logged at debug, below the default level
            break
        time.sleep(0.05)
    lines = [line for line in server.lines() if line["logger"] != "uvicorn.error"]
    # uvicorn's own access line is written inside the request context: it carries the id.
    assert [(line["logger"], line["request_id"]) for line in lines][1:6] == [
        ("backend_kit.request", lines[0]["request_id"]),
        ("notes", "note-1"),
        ("uvicorn.access", "note-1"),
        ("backend_kit.request", "note-1"),
        ("uvicorn.access", "probe-1"),
    ]
    finished = [line for line in lines if line["event"] == "request_finished"]
    assert [(line["method"], line["route"], line["status"]) for line in finished] == [
        ("PUT", "/notes/{name}", 401),
        ("PUT", "/notes/{name}", 200),
        ("GET", "/notes/{name}", 404),
    ]
    assert len(lines) == 9  # 5 requests: 5 access lines, 3 request_finished, 1 note_saved


def _call(app: Any, path: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "client": None}
    asyncio.run(app(scope, receive, send))
    return sent


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_while_draining_responses_close_the_connection_and_readiness_fails() -> None:
    app = BackendKitMiddleware(_ok, settings=load_settings())
    (start, _) = _call(app, "/")
    assert (b"connection", b"close") not in start["headers"]
    start_draining()
    try:
        (start, _) = _call(app, "/")
        assert (b"connection", b"close") in start["headers"]
        (start, _) = _call(app, "/readyz")
        assert start["status"] == 503
        (start, _) = _call(app, "/livez")
        assert start["status"] == 200
    finally:
        reset_lifecycle()


def test_an_app_that_raises_is_logged_as_500_and_leaves_its_context() -> None:
    async def boom(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    app = BackendKitMiddleware(boom, settings=load_settings())
    with capture_logs() as logs, pytest.raises(RuntimeError, match="boom"):
        _call(app, "/x")
    assert [(e["event"], e["status"], e["level"]) for e in logs] == [
        ("request_finished", 500, "error")
    ]
    assert current_request_id() is None


def test_non_http_scopes_pass_through() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = BackendKitMiddleware(app, settings=load_settings())

    async def nothing() -> dict[str, Any]:
        return {}

    async def ignore(message: Any) -> None:
        return None

    with capture_logs() as logs:
        asyncio.run(middleware({"type": "websocket", "path": "/ws"}, nothing, ignore))
    assert seen == ["websocket"]
    assert logs == []
