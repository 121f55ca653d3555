"""The Flask adapter, end to end through Flask's own test client."""

from __future__ import annotations

import re
import threading
from typing import Any

import orjson
import pytest
from flask import Flask, g

from backend_kit import current_request_id, get_logger, load_settings
from backend_kit.flask import BackendKit, extension, init_app
from backend_kit.health import HealthCheck, HealthRegistry
from backend_kit.testing import capture_logs, capture_sentry_events

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
SECRET_TOKEN = "tok-7f3a9c1e5b"


class ServiceApp(Flask):
    """A subclass, to show init_app keeps the app's own type."""


def make_app(**settings: Any) -> ServiceApp:
    app = ServiceApp("svc")

    @app.get("/hello/<name>")
    def hello(name: str) -> dict[str, str]:
        get_logger("svc").info("greeting", name=name)
        return {"hello": name}

    @app.get("/whoami")
    def whoami() -> dict[str, str | None]:
        return {"request_id": current_request_id(), "g": g.request_id}

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError(f"upstream refused Authorization: Bearer {SECRET_TOKEN}")

    values: dict[str, Any] = {"service_name": "svc", "environment": "test", "log_format": "json"}
    values.update(settings)
    return init_app(app, settings=load_settings(**values))


@pytest.fixture
def app() -> ServiceApp:
    return make_app()


def finished(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in logs if event["event"] == "request_finished"]


def test_init_app_returns_the_same_app_and_stores_its_state() -> None:
    app = ServiceApp("svc")
    assert init_app(app) is app
    state = extension(app)
    assert isinstance(state, BackendKit)
    assert app.extensions["backend_kit"] is state
    assert init_app(app) is app  # a second call changes nothing
    assert extension(app) is state
    with pytest.raises(RuntimeError, match=r"call backend_kit\.flask\.init_app"):
        extension(Flask("other"))


def test_inbound_request_id_is_kept_echoed_and_logged(app: ServiceApp) -> None:
    with capture_logs() as logs:
        response = app.test_client().get("/hello/ada", headers={"X-Request-ID": "req-42.a:b"})
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "req-42.a:b"
    assert {event["request_id"] for event in logs} == {"req-42.a:b"}
    assert [event["event"] for event in logs] == ["greeting", "request_finished"]


def test_request_finished_has_every_field_once_per_request(app: ServiceApp) -> None:
    with capture_logs() as logs:
        app.test_client().get("/hello/ada")
    (event,) = finished(logs)
    assert event["level"] == "info"
    assert event["method"] == "GET"
    assert event["route"] == "/hello/<name>"
    assert event["path"] == "/hello/ada"
    assert event["status"] == 200
    assert isinstance(event["duration_ms"], float)
    assert event["duration_ms"] >= 0
    assert event["client"] == "127.0.0.1"
    assert GENERATED_ID.match(event["request_id"])
    assert event["service"] == "svc"
    assert event["environment"] == "test"
    assert event["logger"] == "backend_kit.request"


@pytest.mark.parametrize(
    "bad_id",
    ["x" * 4096, "abc\ndef", 'abc"def', "abc'def", "a b", "", "id\x00zero", "caf\u00e9"],
    ids=["4KB", "newline", "double-quote", "single-quote", "space", "empty", "nul", "unicode"],
)
def test_unsafe_request_id_is_replaced_everywhere(app: ServiceApp, bad_id: str) -> None:
    with capture_logs() as logs:
        # Through the WSGI environ: the test client refuses such headers itself.
        response = app.test_client().get(
            "/hello/ada", environ_overrides={"HTTP_X_REQUEST_ID": bad_id}
        )
    echoed = response.headers["X-Request-ID"]
    assert GENERATED_ID.match(echoed)
    assert {event["request_id"] for event in logs} == {echoed}
    rendered = orjson.dumps(logs).decode()
    if bad_id:
        assert bad_id not in rendered


def test_levels_by_status_and_404_and_500_keep_the_header(app: ServiceApp) -> None:
    client = app.test_client()
    with capture_logs() as logs:
        not_found = client.get("/nowhere", headers={"X-Request-ID": "r404"})
        error = client.get("/boom", headers={"X-Request-ID": "r500"})
    assert not_found.status_code == 404
    assert not_found.headers["X-Request-ID"] == "r404"
    assert error.status_code == 500
    assert error.headers["X-Request-ID"] == "r500"
    events = finished(logs)
    assert [(e["status"], e["level"], e["route"]) for e in events] == [
        (404, "warning", None),
        (500, "error", "/boom"),
    ]


def test_an_unhandled_exception_is_logged_once_with_its_traceback(app: ServiceApp) -> None:
    with capture_logs() as logs:
        app.test_client().get("/boom", headers={"X-Request-ID": "rid-boom"})
    with_traceback = [event for event in logs if "exception" in event]
    assert len(with_traceback) == 1
    (logged,) = with_traceback
    assert logged["request_id"] == "rid-boom"
    assert logged["level"] == "error"
    assert "RuntimeError" in str(logged["exception"])
    assert SECRET_TOKEN not in orjson.dumps(logs).decode()


def test_the_exception_reaches_sentry_once_tagged_and_redacted(app: ServiceApp) -> None:
    with capture_sentry_events() as sentry, capture_logs():
        response = app.test_client().get("/boom", headers={"X-Request-ID": "rid-sentry"})
    assert response.status_code == 500
    reported = [event for event in sentry.events if "exception" in event]
    assert len(reported) == 1
    assert reported[0]["tags"]["request_id"] == "rid-sentry"
    everything = orjson.dumps([sentry.events, sentry.breadcrumbs, sentry.transactions]).decode()
    assert SECRET_TOKEN not in everything


def test_client_address_honours_trusted_proxies() -> None:
    app = make_app(trusted_proxies=1)
    with capture_logs() as logs:
        app.test_client().get(
            "/hello/ada", headers={"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}
        )
    assert finished(logs)[0]["client"] == "203.0.113.7"
    untrusting = make_app()
    with capture_logs() as logs:
        untrusting.test_client().get("/hello/ada", headers={"X-Forwarded-For": "203.0.113.7"})
    assert finished(logs)[0]["client"] == "127.0.0.1"


def test_health_endpoints_answer_and_are_logged_at_debug_only(app: ServiceApp) -> None:
    client = app.test_client()
    with capture_logs() as logs:
        live = client.get("/livez")
        ready = client.get("/readyz")
        startup = client.get("/startupz")
    assert (live.status_code, ready.status_code, startup.status_code) == (200, 200, 200)
    assert live.headers["Content-Type"] == "application/health+json"
    assert live.headers["Cache-Control"] == "no-store"
    assert orjson.loads(live.data) == {"status": "pass"}
    assert live.headers["X-Request-ID"]
    assert logs == []  # LOG_LEVEL=INFO: probes do not drown the service's lines


def test_detailed_report_needs_the_token() -> None:
    app = make_app(health_token=SECRET_TOKEN, environment="production")
    client = app.test_client()
    denied = client.get("/healthz", headers={"Authorization": "Bearer wrong-token-xyz"})
    assert denied.status_code == 401
    assert orjson.loads(denied.data) == {"status": "pass"}
    assert client.get("/healthz").status_code == 401
    allowed = client.get("/healthz", headers={"Authorization": f"Bearer {SECRET_TOKEN}"})
    assert allowed.status_code == 200
    report = orjson.loads(allowed.data)
    assert report["serviceId"] == "svc"
    public_ready = orjson.loads(client.get("/readyz").data)
    assert public_ready == {"status": "pass"}


def test_readiness_runs_the_settings_checks_against_real_services(
    postgres_url: str, redis_url: str
) -> None:
    app = make_app(database_url=postgres_url, cache_url=redis_url, environment="development")
    client = app.test_client()
    report = orjson.loads(client.get("/healthz").data)
    assert report["status"] == "pass"
    assert set(report["checks"]) == {"postgresql:responseTime", "cache:responseTime"}

    def broken() -> None:
        raise ConnectionError(f"payments down at https://user:{SECRET_TOKEN}@payments.internal")

    extension(app).health.add(HealthCheck("payments", run=broken, component_type="http"))
    failing = client.get("/healthz")
    assert failing.status_code == 503
    assert client.get("/readyz").status_code == 503
    assert client.get("/livez").status_code == 200  # liveness never looks at dependencies
    assert SECRET_TOKEN not in failing.get_data(as_text=True)


def test_a_given_registry_and_a_path_prefix() -> None:
    registry = HealthRegistry()
    app = make_app(health_path_prefix="/ops")
    custom = init_app(ServiceApp("custom"), settings=load_settings(), health=registry)
    assert extension(custom).health is registry
    client = app.test_client()
    assert client.get("/ops/livez").status_code == 200
    assert client.get("/livez").status_code == 404


def test_no_context_leaks_across_a_thousand_sequential_requests(app: ServiceApp) -> None:
    client = app.test_client()
    with capture_logs() as logs:
        for number in range(1000):
            response = client.get("/whoami", headers={"X-Request-ID": f"seq-{number}"})
            body = response.get_json()
            assert body == {"request_id": f"seq-{number}", "g": f"seq-{number}"}
            assert response.headers["X-Request-ID"] == f"seq-{number}"
    assert [event["request_id"] for event in finished(logs)] == [f"seq-{n}" for n in range(1000)]
    assert current_request_id() is None


def test_no_context_leaks_across_two_hundred_concurrent_requests(app: ServiceApp) -> None:
    barrier = threading.Barrier(50)
    mismatches: list[tuple[str, Any]] = []

    def worker(worker_number: int) -> None:
        client = app.test_client()
        barrier.wait()
        for round_number in range(4):
            request_id = f"w{worker_number}-r{round_number}"
            response = client.get("/whoami", headers={"X-Request-ID": request_id})
            seen = (response.get_json(), response.headers["X-Request-ID"])
            if seen != ({"request_id": request_id, "g": request_id}, request_id):
                mismatches.append((request_id, seen))

    with capture_logs() as logs:
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert mismatches == []
    events = finished(logs)
    assert len(events) == 200
    assert len({event["request_id"] for event in events}) == 200


def test_without_a_dsn_flask_setup_does_not_import_sentry() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from flask import Flask\n"
        "from backend_kit.flask import init_app\n"
        "app = init_app(Flask('x'))\n"
        "app.test_client().get('/livez')\n"
        "assert 'sentry_sdk' not in sys.modules, 'sentry_sdk imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)


def test_the_logged_path_is_decoded(app: ServiceApp) -> None:
    with capture_logs() as logs:
        app.test_client().get("/hello/caf%C3%A9")
    (event,) = finished(logs)
    assert event["path"] == "/hello/caf\u00e9"
    assert event["route"] == "/hello/<name>"


def test_a_propagated_exception_is_still_one_500_event_and_leaves_no_context(
    app: ServiceApp,
) -> None:
    app.testing = True  # Flask re-raises instead of answering 500
    with capture_logs() as logs, pytest.raises(RuntimeError, match="upstream refused"):
        app.test_client().get("/boom", headers={"X-Request-ID": "propagated"})
    (event,) = finished(logs)
    assert (event["status"], event["level"], event["request_id"]) == (500, "error", "propagated")
    assert current_request_id() is None
