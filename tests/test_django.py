"""The Django adapter, end to end through Django's own test clients (WSGI and ASGI)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.test import AsyncClient, Client

from backend_kit import current_request_id
from backend_kit.django._state import setup, state
from backend_kit.health import HealthCheck
from backend_kit.testing import capture_logs, capture_sentry_events
from tests.django_project.service import ServiceSettings
from tests.django_project.views import SECRET_TOKEN

PROJECT_ROOT = Path(__file__).resolve().parent.parent
GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(autouse=True)
def _django_backend_kit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from the project's settings, as ``ready()`` builds them."""
    monkeypatch.setenv("ENVIRONMENT", "test")
    setup()


@pytest.fixture
def databases_open(django_db_blocker: Any) -> Iterator[None]:
    """The readiness checks open real connections (pytest-django blocks them by default)."""
    with django_db_blocker.unblock():
        yield


def finished(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in logs if event["event"] == "request_finished"]


def test_ready_loads_the_settings_class_named_in_django_settings() -> None:
    assert isinstance(state().settings, ServiceSettings)
    assert state().settings.greeting == "hello"


def test_request_id_is_kept_echoed_logged_and_on_the_request() -> None:
    with capture_logs() as logs:
        response = Client().get("/hello/ada", headers={"X-Request-ID": "dj-1"})
    assert response.status_code == 200
    assert response["X-Request-ID"] == "dj-1"
    assert [(e["event"], e["request_id"]) for e in logs] == [
        ("greeting", "dj-1"),
        ("request_finished", "dj-1"),
    ]
    body = Client().get("/whoami", headers={"X-Request-ID": "dj-2"}).json()
    assert body == {"request_id": "dj-2", "attribute": "dj-2"}


def test_request_finished_fields_and_route_template() -> None:
    with capture_logs() as logs:
        Client().get("/hello/ada")
    (event,) = finished(logs)
    assert event["level"] == "info"
    assert event["method"] == "GET"
    assert event["route"] == "hello/<str:name>"
    assert event["path"] == "/hello/ada"
    assert event["status"] == 200
    assert isinstance(event["duration_ms"], float)
    assert event["client"] == "127.0.0.1"
    assert GENERATED_ID.match(event["request_id"])


@pytest.mark.parametrize(
    "bad_id",
    ["x" * 4096, "abc\ndef", 'abc"def', "abc'def", "a b", "\x07bell"],
    ids=["4KB", "newline", "double-quote", "single-quote", "space", "control"],
)
def test_unsafe_request_id_is_replaced(bad_id: str) -> None:
    with capture_logs() as logs:
        response = Client().get("/hello/ada", HTTP_X_REQUEST_ID=bad_id)
    echoed = response["X-Request-ID"]
    assert GENERATED_ID.match(echoed)
    assert {event["request_id"] for event in logs} == {echoed}
    assert bad_id not in orjson.dumps(logs).decode()


def test_levels_by_status_and_errors_keep_the_header() -> None:
    client = Client(raise_request_exception=False, enforce_csrf_checks=True)
    with capture_logs() as logs:
        missing = client.get("/nowhere", headers={"X-Request-ID": "r404"})
        failed = client.get("/boom", headers={"X-Request-ID": "r500"})
        refused = client.post("/form", headers={"X-Request-ID": "r403"})  # no CSRF token
    assert (missing.status_code, failed.status_code, refused.status_code) == (404, 500, 403)
    assert [missing["X-Request-ID"], failed["X-Request-ID"], refused["X-Request-ID"]] == [
        "r404",
        "r500",
        "r403",
    ]
    assert [(e["status"], e["level"]) for e in finished(logs)] == [
        (404, "warning"),
        (500, "error"),
        (403, "warning"),
    ]
    with_traceback = [e for e in logs if "exception" in e]
    assert len(with_traceback) == 1  # the unhandled error, logged once
    assert all("request_id" in e for e in logs)
    # Django's own "Not Found: /nowhere" line would only repeat request_finished,
    # outside the request context: what remains is the 500's traceback and the CSRF
    # refusal's reason, both inside the request.
    others = [(e["logger"], e["event"]) for e in logs if e["event"] != "request_finished"]
    assert others == [
        ("django.request", "Internal Server Error: /boom"),
        ("django.security.csrf", "Forbidden (CSRF cookie not set.): /form"),
    ]
    assert with_traceback[0]["request_id"] == "r500"
    assert SECRET_TOKEN not in orjson.dumps(logs).decode()


def test_the_exception_reaches_sentry_once_tagged_and_redacted() -> None:
    client = Client(raise_request_exception=False)
    with capture_sentry_events() as sentry, capture_logs():
        client.get("/boom", headers={"X-Request-ID": "dj-sentry"})
    reported = [event for event in sentry.events if "exception" in event]
    assert len(reported) == 1
    assert reported[0]["tags"]["request_id"] == "dj-sentry"
    everything = orjson.dumps([sentry.events, sentry.breadcrumbs, sentry.transactions]).decode()
    assert SECRET_TOKEN not in everything


def test_health_endpoints_are_public_exempt_and_quiet() -> None:
    client = Client(enforce_csrf_checks=True)
    with capture_logs() as logs:
        live = client.get("/livez")
        # A host Django would refuse (ALLOWED_HOSTS): probes come from pod addresses.
        foreign_host = client.get("/livez", HTTP_HOST="10.1.2.3:8000")
    assert live.status_code == 200
    assert foreign_host.status_code == 200
    assert live["Content-Type"] == "application/health+json"
    assert "no-store" in live["Cache-Control"]
    assert orjson.loads(live.content) == {"status": "pass"}
    assert logs == []
    assert client.post("/livez").status_code == 405


def test_every_database_and_cache_alias_is_a_readiness_check(
    databases_open: None, postgres_url: str, redis_url: str
) -> None:
    setup(ServiceSettings(environment="development"))  # details without a token
    response = Client().get("/healthz")
    report = orjson.loads(response.content)
    assert response.status_code == 200, report
    assert set(report["checks"]) == {
        "database-default:responseTime",
        "database-pg:responseTime",
        "cache-default:responseTime",
        "cache-redis:responseTime",
    }
    assert Client().get("/readyz").status_code == 200


def test_a_failing_check_fails_readiness_but_not_liveness(databases_open: None) -> None:
    def broken() -> None:
        raise ConnectionError(f"payments down, token {SECRET_TOKEN}")

    state().health.add(HealthCheck("payments", run=broken, component_type="http"))
    client = Client()
    assert client.get("/readyz").status_code == 503
    assert client.get("/livez").status_code == 200
    detailed = client.get("/healthz", headers={"Authorization": "Bearer nope"})
    assert detailed.status_code == 401
    assert orjson.loads(detailed.content) == {"status": "fail"}


def test_the_detailed_report_with_the_token(
    databases_open: None, monkeypatch: pytest.MonkeyPatch, postgres_url: str, redis_url: str
) -> None:
    monkeypatch.setenv("HEALTH_TOKEN", "django-health-token-123")
    monkeypatch.setenv("ENVIRONMENT", "production")
    setup(ServiceSettings())
    client = Client()
    assert client.get("/healthz").status_code == 401
    allowed = client.get("/healthz", headers={"Authorization": "Bearer django-health-token-123"})
    assert "checks" in orjson.loads(allowed.content)


def test_no_context_leaks_across_a_thousand_sequential_requests() -> None:
    client = Client()
    with capture_logs() as logs:
        for number in range(1000):
            body = client.get("/whoami", headers={"X-Request-ID": f"seq-{number}"}).json()
            assert body == {"request_id": f"seq-{number}", "attribute": f"seq-{number}"}
    assert [e["request_id"] for e in finished(logs)] == [f"seq-{n}" for n in range(1000)]
    assert current_request_id() is None


def test_no_context_leaks_across_two_hundred_concurrent_async_requests() -> None:
    """Async views under Django's ASGI handler, all in flight on one event loop."""

    async def one(number: int) -> tuple[str, Any, str]:
        request_id = f"async-{number}"
        response = await AsyncClient().get("/whoami-async", headers={"X-Request-ID": request_id})
        return request_id, response.json(), response["X-Request-ID"]

    async def all_of_them() -> list[tuple[str, Any, str]]:
        return await asyncio.gather(*(one(n) for n in range(200)))

    with capture_logs() as logs:
        results = asyncio.run(all_of_them())
    for request_id, body, header in results:
        assert body == {"request_id": request_id, "attribute": request_id}
        assert header == request_id
    events = finished(logs)
    assert len(events) == 200
    assert {e["request_id"] for e in events} == {f"async-{n}" for n in range(200)}


def test_no_context_leaks_across_two_hundred_concurrent_threads() -> None:
    import threading

    barrier = threading.Barrier(50)
    mismatches: list[Any] = []

    def worker(worker_number: int) -> None:
        client = Client()
        barrier.wait()
        for round_number in range(4):
            request_id = f"t{worker_number}-{round_number}"
            body = client.get("/whoami", headers={"X-Request-ID": request_id}).json()
            if body != {"request_id": request_id, "attribute": request_id}:
                mismatches.append((request_id, body))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert mismatches == []


def test_django_settings_bridge_gives_django_its_databases_and_caches() -> None:
    from django.conf import settings

    assert settings.DATABASES["pg"]["ENGINE"] == "django.db.backends.postgresql"
    assert settings.CACHES["redis"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert settings.LOGGING_CONFIG is None


def test_without_a_dsn_django_setup_does_not_import_sentry() -> None:
    script = (
        "import os, sys, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'tests.django_project.settings'\n"
        "django.setup()\n"
        "from django.test import Client\n"
        "assert Client().get('/livez').status_code == 200\n"
        "assert 'sentry_sdk' not in sys.modules, 'sentry_sdk imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, cwd=PROJECT_ROOT)


def test_a_broken_stdout_never_fails_a_request_nor_leaves_its_context(
    capfd: pytest.CaptureFixture[str],
) -> None:
    import contextlib
    import io
    import os

    from backend_kit import configure_logging
    from backend_kit._logging import sink

    read_end, write_end = os.pipe()
    os.close(read_end)  # the log collector went away: every write raises BrokenPipeError
    stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_end, "w")), encoding="utf-8")
    configure_logging(state().settings, format="json", stream=stream)
    before = sink.dropped
    try:
        for number in range(10):
            response = Client().get("/whoami", headers={"X-Request-ID": f"dj-broken-{number}"})
            assert response.status_code == 200
            assert response.json()["request_id"] == f"dj-broken-{number}"
            assert current_request_id() is None  # nothing left on this thread
    finally:
        configure_logging(state().settings, format="json")
        with contextlib.suppress(OSError):
            stream.close()
    assert sink.dropped - before >= 10  # at least request_finished, each time
    assert "could not be written" in capfd.readouterr().err
