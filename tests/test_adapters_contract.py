"""One behavioural contract, every adapter: Flask, Django (sync and async) and ASGI.

Each adapter serves the same small app behind an app-wide authentication hook that
answers 401 to anything without the right token: a Flask ``before_request`` hook, a
Django middleware placed after backend_kit's, and an ASGI app that checks the header
itself. The probes must pass that hook untouched.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from django.http import HttpResponse, JsonResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path
from flask import Flask

from backend_kit import configure_logging, current_request_id, get_logger, load_settings
from backend_kit._context import current_context
from backend_kit.asgi import BackendKitMiddleware
from backend_kit.django._state import setup, state
from backend_kit.flask import extension, init_app
from backend_kit.health._cli import _load_runner
from backend_kit.testing import capture_logs

TOKEN = "Bearer contract-token"
ADAPTERS = ["flask", "django-sync", "django-async", "asgi"]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


Call = Callable[[str, dict[str, str]], Answer]


class DenyWithoutTokenMiddleware:
    """The Django form of an app-wide login hook."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        if request.META.get("HTTP_AUTHORIZATION") != TOKEN:
            return HttpResponse(status=401)
        return self.get_response(request)


def _django_hello(request: Any, name: str) -> JsonResponse:
    get_logger("svc").info("greeting", name=name)
    return JsonResponse({"request_id": current_request_id(), "bound": sorted(current_context())})


#: The URLconf of the Django adapter's run (``ROOT_URLCONF`` is this module).
urlpatterns = [path("hello/<str:name>", _django_hello)]


def _flask() -> tuple[Call, list[str]]:
    app = Flask("contract")

    @app.before_request
    def deny_without_token() -> Any:
        from flask import request

        if request.headers.get("Authorization") != TOKEN:
            return "", 401
        return None

    @app.get("/hello/<name>")
    def hello(name: str) -> Any:
        get_logger("svc").info("greeting", name=name)
        return {"request_id": current_request_id(), "bound": sorted(current_context())}

    init_app(app, settings=load_settings())
    client = app.test_client()

    def call(path: str, headers: dict[str, str]) -> Answer:
        response = client.get(path, headers=headers)
        return Answer(
            response.status_code, {k.lower(): v for k, v in response.headers}, response.data
        )

    return call, [check.key for check in extension(app).health]


def _django(*, asynchronous: bool) -> tuple[Call, list[str]]:
    setup(load_settings())

    def call(path: str, headers: dict[str, str]) -> Answer:
        if asynchronous:
            response = asyncio.run(AsyncClient().get(path, headers=headers))
        else:
            response = Client().get(path, headers=headers)
        return Answer(
            response.status_code, {k.lower(): v for k, v in response.items()}, response.content
        )

    return call, [check.key for check in state().health]


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app, no framework: the hook and the one route written by hand."""
    headers = dict(scope["headers"])
    if headers.get(b"authorization") != TOKEN.encode():
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    get_logger("svc").info("greeting", name=scope["path"].rsplit("/", 1)[-1])
    body = orjson.dumps({"request_id": current_request_id(), "bound": sorted(current_context())})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _asgi() -> tuple[Call, list[str]]:
    middleware = BackendKitMiddleware(_asgi_app, settings=load_settings())

    def call(path: str, headers: dict[str, str]) -> Answer:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
        }
        asyncio.run(middleware(scope, receive, send))
        start, *bodies = sent
        return Answer(
            start["status"],
            {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(message.get("body", b"") for message in bodies),
        )

    return call, [check.key for check in middleware.health]


@pytest.fixture(params=ADAPTERS)
def adapter(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    postgres_url: str,
    redis_url: str,
    django_db_blocker: Any,
) -> Iterator[tuple[str, Call, list[str]]]:
    """(name, a function making one GET request, the readiness check keys); every
    adapter reads the same environment: a real PostgreSQL and a real Redis."""
    name: str = request.param
    for variable, value in {
        "SERVICE_NAME": "svc",
        "ENVIRONMENT": "test",
        "LOG_LEVEL": "debug",  # probes are logged at debug
        "DATABASE_URL": postgres_url,
        "CACHE_URL": redis_url,
    }.items():
        monkeypatch.setenv(variable, value)
    # asyncio.run() logs its selector at debug: not the adapter's to count.
    asyncio_logger = logging.getLogger("asyncio")
    monkeypatch.setattr(asyncio_logger, "level", logging.INFO)
    with django_db_blocker.unblock():
        yield from _adapter(name)


def _adapter(name: str) -> Iterator[tuple[str, Call, list[str]]]:
    if name == "flask":
        yield (name, *_flask())
        return
    if name == "asgi":
        yield (name, *_asgi())
        return
    middleware = [
        "backend_kit.django.middleware.RequestContextMiddleware",
        "tests.test_adapters_contract.DenyWithoutTokenMiddleware",
    ]
    with override_settings(MIDDLEWARE=middleware, ROOT_URLCONF=__name__):
        yield (name, *_django(asynchronous=name == "django-async"))


def _finished(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in logs if event["event"] == "request_finished"]


def test_request_id_in_and_out_and_one_request_finished(
    adapter: tuple[str, Call, list[str]],
) -> None:
    name, call, _ = adapter
    with capture_logs() as logs:
        answer = call("/hello/ada", {"X-Request-ID": "contract-1", "Authorization": TOKEN})
    assert answer.status == 200, name
    assert answer.headers["x-request-id"] == "contract-1"
    assert orjson.loads(answer.body)["request_id"] == "contract-1"
    assert [(e["event"], e["request_id"]) for e in logs] == [
        ("greeting", "contract-1"),
        ("request_finished", "contract-1"),
    ]
    (event,) = _finished(logs)
    assert (event["method"], event["path"], event["status"]) == ("GET", "/hello/ada", 200)


def test_the_inbound_trace_is_continued_and_a_bad_one_replaced(
    adapter: tuple[str, Call, list[str]],
) -> None:
    name, call, _ = adapter
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    inbound = f"00-{trace_id}-00f067aa0ba902b7-01"
    with capture_logs() as logs:
        call("/hello/ada", {"traceparent": inbound, "Authorization": TOKEN})
        call("/hello/ada", {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"})
    continued, replaced = _finished(logs)
    assert continued["trace_id"] == trace_id, name
    assert continued["span_id"] != "00f067aa0ba902b7"  # this service's own span
    assert len(replaced["trace_id"]) == 32
    assert replaced["trace_id"] not in (trace_id, "0" * 32)


def test_an_unsafe_inbound_id_is_replaced(adapter: tuple[str, Call, list[str]]) -> None:
    _, call, _ = adapter
    with capture_logs() as logs:
        answer = call("/hello/ada", {"X-Request-ID": "x" * 200, "Authorization": TOKEN})
    replaced = answer.headers["x-request-id"]
    assert len(replaced) == 32
    assert replaced != "x" * 200
    assert {event["request_id"] for event in logs} == {replaced}


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/startupz"])
def test_probes_are_answered_before_the_apps_auth_hook(
    adapter: tuple[str, Call, list[str]], path: str
) -> None:
    name, call, _ = adapter
    with capture_logs() as logs:
        denied = call("/hello/ada", {})
        probe = call(path, {"X-Request-ID": "probe-1"})
    assert denied.status == 401, name
    assert probe.status == 200, (name, probe.body)
    assert orjson.loads(probe.body) == {"status": "pass"}
    assert probe.headers["x-request-id"] == "probe-1"
    assert probe.headers["content-type"] == "application/health+json"
    events = _finished(logs)
    assert [(e["path"], e["status"], e["level"]) for e in events] == [
        ("/hello/ada", 401, "warning"),
        (path, 200, "debug"),
    ]


def test_the_detailed_report_needs_credentials_in_every_adapter(
    adapter: tuple[str, Call, list[str]],
) -> None:
    _, call, _ = adapter
    answer = call("/healthz", {})
    assert answer.status == 401
    assert answer.headers["www-authenticate"] == 'Bearer realm="health"'


def test_no_context_leaks_between_requests(adapter: tuple[str, Call, list[str]]) -> None:
    _, call, _ = adapter
    ids = set()
    for _ in range(20):
        body = orjson.loads(call("/hello/ada", {"Authorization": TOKEN}).body)
        assert body["bound"] == ["request_id", "span_id", "trace_id"]
        ids.add(body["request_id"])
        assert current_request_id() is None
    assert len(ids) == 20


def test_every_adapter_and_the_cli_run_the_same_built_in_checks(
    adapter: tuple[str, Call, list[str]],
) -> None:
    name, _, checks = adapter
    cli_checks = [check.key for check in _load_runner(None).registry]
    if name.startswith("django"):
        # Django adds one check per DATABASES and CACHES alias after the shared set.
        shared = [key for key in checks if not key.startswith(("database-", "cache-"))]
        assert shared == cli_checks
        assert all(key.startswith(("database-", "cache-")) for key in checks[len(shared) :])
    else:
        assert checks == cli_checks
    assert cli_checks == ["postgresql:responseTime", "cache:responseTime"]


def test_a_broken_log_stream_fails_no_request_and_leaks_no_context(
    adapter: tuple[str, Call, list[str]],
) -> None:
    name, call, _ = adapter
    read_end, write_end = os.pipe()
    os.close(read_end)  # every flush raises BrokenPipeError, as when the collector left
    stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_end, "w")), encoding="utf-8")
    try:
        configure_logging(load_settings(), format="json", stream=stream)
        ids = []
        for _ in range(5):
            answer = call("/hello/ada", {"Authorization": TOKEN})
            assert answer.status == 200, name
            body = orjson.loads(answer.body)
            assert body["bound"] == ["request_id", "span_id", "trace_id"]
            assert body["request_id"] == answer.headers["x-request-id"]
            ids.append(body["request_id"])
            assert current_request_id() is None
        assert len(set(ids)) == 5
    finally:
        with suppress(OSError):
            stream.close()
