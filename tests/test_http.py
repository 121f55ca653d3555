"""backend_kit.http against real servers on loopback: propagation across two gunicorn
services into a real Sentry receiver, retries, Retry-After, the retry budget, the
per-host breaker, timeouts and redaction. Every call a server received is counted."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from backend_kit import (
    CircuitOpenError,
    configure_logging,
    http,
    load_settings,
    request_context,
)
from backend_kit._retry import override_retries
from backend_kit._trace import parse_traceparent
from backend_kit.health import http_check

from .sentry_receiver import sentry_receiver
from .servers import free_port, gunicorn_server, silent_tcp_server
from .test_examples import _clean_env

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INBOUND = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@dataclass
class Upstream:
    """A loopback server answering from a script of (status, headers) and counting calls."""

    port: int
    script: list[tuple[int, dict[str, str]]]
    default: tuple[int, dict[str, str]] = (200, {})
    received: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def upstream(*script: tuple[int, dict[str, str]], default: int = 200) -> Iterator[Upstream]:
    state = Upstream(0, list(script), (default, {}))

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            with state.lock:
                state.received.append((self.command, dict(self.headers)))
                status, headers = state.script.pop(0) if state.script else state.default
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _logs(**settings: Any) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(load_settings(**settings), format="json", stream=stream)
    return stream


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_propagation_across_two_real_services(tmp_path: Path) -> None:
    with sentry_receiver() as receiver:
        common = {**_clean_env(), "LOG_FORMAT": "json", "SENTRY_DSN": receiver.dsn}
        app_dir = Path(__file__).parent / "trace_services"
        with gunicorn_server(
            "app:app",
            cwd=app_dir,
            env={**common, "SERVICE_NAME": "back"},
            log_path=tmp_path / "back.log",
        ) as back:
            with gunicorn_server(
                "app:app",
                cwd=app_dir,
                env={**common, "SERVICE_NAME": "front", "BACK_URL": back.url},
                log_path=tmp_path / "front.log",
            ) as front:
                answer = httpx.get(
                    front.url + "/front",
                    headers={"traceparent": INBOUND, "X-Request-ID": "edge-42"},
                    timeout=30,
                )
                assert answer.status_code == 500
                receiver.wait_for(lambda r: len(r.events) >= 2, timeout=20)
                time.sleep(0.5)  # a late duplicate would still be counted below
            front_lines = _json_lines(front.output())
            back_lines = _json_lines(back.output())
        events = receiver.events
    assert len(events) == 2
    assert {event["contexts"]["trace"]["trace_id"] for event in events} == {TRACE_ID}
    for lines in (front_lines, back_lines):
        request_lines = [line for line in lines if line.get("request_id") == "edge-42"]
        assert request_lines, lines
        assert {line["trace_id"] for line in request_lines} == {TRACE_ID}
    received = next(line for line in back_lines if line.get("event") == "back_received")
    assert received["seen_request_id"] == "edge-42"
    parsed = parse_traceparent(received["seen_traceparent"])
    assert parsed is not None
    assert parsed[0] == TRACE_ID
    front_span = next(line for line in front_lines if line.get("event") == "front_called_back")
    assert parsed[1] != front_span["span_id"]  # a new child span for the outbound call
    calls = [line for line in front_lines if line.get("event") == "http_request"]
    assert len(calls) == 1
    assert calls[0]["status"] == 500
    assert calls[0]["attempts"] == 1


def _json_lines(output: str) -> list[dict[str, Any]]:
    lines = []
    for raw in output.splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))
    return lines


def test_retry_after_is_honoured() -> None:
    stream = _logs()
    with upstream((503, {"Retry-After": "1"})) as server:
        started = time.monotonic()
        with http.client(breaker=False) as api:
            response = api.get(server.url + "/rates")
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert len(server.received) == 2
    assert elapsed >= 0.95
    events = [line["event"] for line in _lines(stream)]
    assert events == ["retry_scheduled", "http_request"]
    retry, finished = _lines(stream)
    assert retry["wait"] == 1.0
    assert finished["attempts"] == 2


def test_retry_after_past_the_total_cap_is_not_waited_for() -> None:
    _logs()
    settings = load_settings(http_retry_timeout=2.0)
    with upstream((503, {"Retry-After": "30"})) as server:
        started = time.monotonic()
        with http.client(settings=settings, breaker=False) as api:
            response = api.get(server.url + "/rates")
    assert response.status_code == 503
    assert len(server.received) == 1
    assert time.monotonic() - started < 2.0


def test_post_is_not_retried_by_default() -> None:
    _logs()
    with upstream(default=503) as server, http.client(breaker=False) as api, override_retries(5):
        assert api.post(server.url + "/orders", json={"a": 1}).status_code == 503
        assert len(server.received) == 1
        # An Idempotency-Key makes the caller's intent explicit: retried.
        api.post(server.url + "/orders", headers={"Idempotency-Key": "k1"})
        assert len(server.received) == 1 + 3
    with upstream(default=503) as server, override_retries(5):
        with http.client(breaker=False, retry_methods={"POST"}) as api:
            api.post(server.url + "/orders")
        assert len(server.received) == 3


def test_the_retry_budget_caps_a_retry_storm() -> None:
    stream = _logs()
    requests_made = 50
    with upstream(default=503) as server, http.client(breaker=False) as api, override_retries(3):
        for _ in range(requests_made):
            assert api.get(server.url + "/flaky").status_code == 503
        received = len(server.received)
    # Without a budget: 150 calls. With 20 % over the window (and a floor of 3):
    assert requests_made < received <= requests_made + 3 + 0.2 * requests_made
    exhausted = [line for line in _lines(stream) if line["event"] == "retry_budget_exhausted"]
    assert len(exhausted) == 1
    assert exhausted[0]["host"] == f"127.0.0.1:{server.port}"
    assert exhausted[0]["budget"] == 0.2


def test_per_host_breaker_opens_and_fails_fast() -> None:
    stream = _logs()
    settings = load_settings(http_breaker_failures=3, http_retry_attempts=1)
    with upstream(default=502) as server, http.client(settings=settings) as api:
        for _ in range(3):
            assert api.get(server.url + "/x").status_code == 502
        with pytest.raises(CircuitOpenError):
            api.get(server.url + "/x")
        assert len(server.received) == 3
    lines = _lines(stream)
    # The third failure opens the circuit before its own event is written.
    assert [line["event"] for line in lines] == [
        "http_request",
        "http_request",
        "circuit_state_changed",
        "http_request",
        "http_request",
    ]
    assert lines[-1]["error_type"] == "CircuitOpenError"


def test_timeouts_are_always_set() -> None:
    _logs()
    settings = load_settings(http_read_timeout=0.3, http_retry_attempts=1)
    with silent_tcp_server() as port, http.client(settings=settings, breaker=False) as api:
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            api.get(f"http://127.0.0.1:{port}/")
        assert time.monotonic() - started < 3.0
    with silent_tcp_server() as port:
        session = http.session(settings=settings, breaker=False)
        with pytest.raises(requests.ReadTimeout):
            session.get(f"http://127.0.0.1:{port}/")


def test_connect_errors_are_retried_even_for_post() -> None:
    stream = _logs()
    port = free_port()  # nothing listens: the request never left
    with http.client(breaker=False) as api, override_retries(3), pytest.raises(httpx.ConnectError):
        api.post(f"http://127.0.0.1:{port}/orders")
    lines = _lines(stream)
    assert [line["event"] for line in lines] == ["retry_scheduled"] * 2 + ["http_request"]
    assert lines[-1]["attempts"] == 3


def test_async_client_and_session_behave_the_same() -> None:
    _logs()
    with upstream((503, {}), (503, {})) as server:

        async def call() -> int:
            async with http.async_client(breaker=False) as api:
                with request_context("async-1", traceparent=INBOUND):
                    return (await api.get(server.url + "/a")).status_code

        with override_retries(3):
            assert asyncio.run(call()) == 200
        assert len(server.received) == 3
        assert server.received[0][1]["X-Request-ID"] == "async-1"
    with upstream((504, {})) as server, override_retries(3):
        with request_context("sync-1", traceparent=INBOUND):
            response = http.session(breaker=False).get(server.url + "/b")
        assert response.status_code == 200
        assert len(server.received) == 2
        headers = server.received[1][1]
        assert headers["X-Request-ID"] == "sync-1"
        parsed = parse_traceparent(headers["traceparent"])
        assert parsed is not None
        assert parsed[0] == TRACE_ID


def test_no_secret_of_the_url_or_headers_in_any_output(capsys: pytest.CaptureFixture[str]) -> None:
    stream = _logs()
    secrets = ["pw-canary-1", "tok-canary-2", "bearer-canary-3", "cookie-canary-4"]
    with upstream((503, {}), default=500) as server, override_retries(2):
        url = f"http://user:{secrets[0]}@127.0.0.1:{server.port}/x?access_token={secrets[1]}&q=1"
        headers = {"Authorization": f"Bearer {secrets[2]}", "Cookie": f"session={secrets[3]}"}
        with http.client(breaker=False) as api:
            api.get(url, headers=headers)
        http.session(breaker=False).get(url, headers=headers)
    with (
        pytest.raises(httpx.ConnectError) as raised,
        http.client(breaker=False) as api,
        override_retries(1),
    ):
        api.get(f"http://user:{secrets[0]}@127.0.0.1:{free_port()}/?token={secrets[1]}")
    output = stream.getvalue() + "".join(capsys.readouterr()) + str(raised.value)
    assert "http_request" in output
    for secret in secrets:
        assert secret not in output
    assert "Authorization" not in output
    assert "session=" not in output


def test_health_check_uses_the_same_client() -> None:
    _logs()
    with upstream((503, {}), default=200) as server:
        check = http_check(server.url + "/health", timeout=2)
        with pytest.raises(RuntimeError, match="503"):
            check.run()
        check.run()
        # One request per run: a health check reports the state it finds, no retries.
        assert len(server.received) == 2
        assert "traceparent" in server.received[0][1]


def test_a_client_without_a_breaker_leaves_the_default_breaker_to_the_others() -> None:
    stream = _logs()
    settings = load_settings(http_breaker_failures=2, http_retry_attempts=1)
    with upstream(default=502) as server:
        # The first client to call the host has no breaker; the next ones still get
        # the host's breaker (the choice is per client, the host's state is shared).
        with http.client(settings=settings, breaker=False) as unguarded:
            for _ in range(3):
                assert unguarded.get(server.url + "/x").status_code == 502
        with http.client(settings=settings) as guarded, http.client(settings=settings) as other:
            for _ in range(2):
                assert guarded.get(server.url + "/x").status_code == 502
            with pytest.raises(CircuitOpenError):
                other.get(server.url + "/x")
        assert len(server.received) == 5
    events = [line["event"] for line in _lines(stream)]
    assert events.count("http_request") == 6
    assert events.count("circuit_state_changed") == 1


def test_session_adapter_takes_positional_arguments_too() -> None:
    _logs()
    with upstream() as server:
        session = http.session(breaker=False)
        prepared = session.prepare_request(requests.Request("GET", server.url + "/p"))
        response = session.get_adapter(prepared.url).send(prepared, False, (2.0, 2.0))
        assert response.status_code == 200
        assert len(server.received) == 1
        assert "traceparent" in server.received[0][1]


# --- the http_request line: the direct writer and the ordinary logger ---------------


def _call_and_read(stream: io.StringIO, scenario: str) -> dict[str, Any]:
    """One call of *scenario* inside a request; the one line it wrote."""
    before = len(stream.getvalue().splitlines())
    with request_context("req-42", traceparent=INBOUND, tenant="acme"), override_retries(1):
        if scenario == "ok":
            with upstream() as server, http.client(breaker=False) as api:
                assert api.get(server.url + "/rates?access_token=tok-canary&page=2").is_success
        elif scenario == "5xx":
            with upstream(default=503) as server:
                assert http.session(breaker=False).get(server.url + "/r").status_code == 503
        else:
            with http.client(breaker=False) as api, pytest.raises(httpx.ConnectError):
                api.get(f"http://user:pw-canary@127.0.0.1:{free_port()}/?token=tok-canary")
    written = _lines(stream)[before:]
    assert [line["event"] for line in written] == ["http_request"]
    return written[0]


@pytest.mark.parametrize("scenario", ["ok", "5xx", "error"])
def test_the_line_is_the_same_through_the_direct_writer_and_the_logger(
    monkeypatch: pytest.MonkeyPatch, scenario: str
) -> None:
    stream = _logs(service_name="billing", environment="staging")
    assert http._direct_line() is not None  # the kit's logging is configured: direct
    direct = _call_and_read(stream, scenario)
    monkeypatch.setattr(http, "_direct_line", lambda: None)
    logged = _call_and_read(stream, scenario)
    assert list(direct) == list(logged)
    for line in (direct, logged):
        line.pop("timestamp"), line.pop("duration_ms"), line.pop("span_id")
        if scenario == "ok":  # each call has its own port
            line["url"] = line["url"].split("/rates")[1]
        elif scenario == "5xx":
            line.pop("url")
        else:
            line.pop("url"), line.pop("error")
    assert direct == logged
    expected_level = "info" if scenario == "ok" else "warning"
    assert direct["level"] == expected_level
    assert direct["logger"] == "backend_kit.http"
    assert direct["request_id"] == "req-42"
    assert direct["tenant"] == "acme"
    assert direct["trace_id"] == TRACE_ID
    assert direct["attempts"] == 1
    if scenario == "ok":
        assert direct["url"] == "?access_token=***&page=2"
    assert "tok-canary" not in stream.getvalue()
    assert "pw-canary" not in stream.getvalue()


def test_the_line_follows_an_applications_own_structlog_configuration() -> None:
    import structlog

    # The kit's logging is not configured: structlog's configuration is in charge.
    assert http._direct_line() is None
    with (
        structlog.testing.capture_logs() as captured,
        upstream() as server,
        http.client(breaker=False) as api,
    ):
        api.get(server.url + "/rates")
    assert [event["event"] for event in captured] == ["http_request"]
    assert captured[0]["log_level"] == "info"
    assert captured[0]["status"] == 200
    assert captured[0]["url"] == server.url + "/rates"


@pytest.mark.parametrize(
    "levels",
    [{"level": "WARNING"}, {"levels": {"backend_kit.http": "WARNING"}}],
    ids=["root level", "the logger's own level"],
)
def test_the_line_below_the_level_is_not_written(levels: dict[str, Any]) -> None:
    stream = io.StringIO()
    configure_logging(load_settings(), format="json", stream=stream, **levels)
    with upstream((200, {}), (500, {})) as server, http.client(breaker=False) as api:
        api.get(server.url + "/quiet")
        api.get(server.url + "/loud")
    lines = _lines(stream)
    assert [(line["event"], line["status"]) for line in lines] == [("http_request", 500)]
    assert lines[0]["level"] == "warning"
