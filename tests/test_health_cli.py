"""``backend-kit health``: exit statuses, in-process registries, settings, --url."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from backend_kit.health._cli import health
from tests.health_support import http_status_server
from tests.servers import free_port, silent_tcp_server


def write_registry(body: str) -> str:
    """A module in the current (temporary) directory; returns its unique name."""
    name = f"svc_health_{uuid.uuid4().hex[:8]}"
    Path(f"{name}.py").write_text(
        "from backend_kit.health import HealthRegistry, HealthRunner\n"
        "registry = HealthRegistry()\n" + body
    )
    return name


PASSING = """
@registry.check(component_type="datastore")
def database():
    return (3, "ms")
"""
WARNING = (
    PASSING
    + """
@registry.check(critical=False)
def search():
    raise RuntimeError("search is down")
"""
)
FAILING = (
    PASSING
    + """
@registry.check
def queue():
    raise RuntimeError("queue is down at amqp://user:queue-pw@mq.internal")
"""
)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(health, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("body", "code", "status"), [(PASSING, 0, "pass"), (WARNING, 0, "warn"), (FAILING, 1, "fail")]
)
def test_ready_exit_status_follows_the_report(body: str, code: int, status: str) -> None:
    module = write_registry(body)
    exit_code, output = invoke("ready", "--registry", f"{module}:registry")
    assert exit_code == code, output
    assert output.splitlines()[0] == f"ready: {status}"
    assert "queue-pw" not in output


def test_live_runs_no_check() -> None:
    module = write_registry(FAILING)
    assert invoke("live", "--registry", f"{module}:registry") == (0, "live: pass\n")


def test_report_prints_a_table_and_json() -> None:
    module = write_registry(WARNING)
    exit_code, output = invoke("report", "--registry", f"{module}:registry")
    assert exit_code == 0
    assert "database:status" in output
    assert "search:status" in output
    assert "RuntimeError" in output
    exit_code, output = invoke("report", "--registry", f"{module}:registry", "--json")
    data = json.loads(output)
    assert data["status"] == "warn"
    assert set(data["checks"]) == {"database:status", "search:status"}


def test_registry_may_be_a_runner_or_a_factory() -> None:
    module = write_registry(
        PASSING + "runner = HealthRunner(registry)\ndef build():\n    return registry\n"
    )
    assert invoke("ready", "--registry", f"{module}:runner")[0] == 0
    assert invoke("ready", "--registry", f"{module}:build")[0] == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_colon", "is not of the form module:attribute"),
        ("missing_module_xyz:registry", "cannot import module 'missing_module_xyz'"),
        ("{module}:nothing", "has no attribute 'nothing'"),
        ("{module}:value", "expected a HealthRegistry"),
        ("{broken}:registry", "ZeroDivisionError"),
    ],
)
def test_bad_registry_is_a_one_line_usage_error(spec: str, message: str) -> None:
    module = write_registry(PASSING + "value = 3\n")
    broken = write_registry("1 / 0\n")
    exit_code, output = invoke("ready", "--registry", spec.format(module=module, broken=broken))
    assert exit_code == 2
    assert message in output
    assert "Traceback" not in output
    assert len(output.strip().splitlines()) == 1


@pytest.mark.postgres
@pytest.mark.redis
def test_settings_imply_the_checks(
    monkeypatch: pytest.MonkeyPatch, postgres_url: str, redis_url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    monkeypatch.setenv("CACHE_URL", redis_url)
    exit_code, output = invoke("report", "--json")
    assert exit_code == 0, output
    assert set(json.loads(output)["checks"]) == {"postgresql:responseTime", "cache:responseTime"}


def test_settings_checks_fail_against_a_dead_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:db-pw-123@127.0.0.1:{free_port()}/app")
    monkeypatch.setenv("HEALTH_CHECK_TIMEOUT", "1")
    exit_code, output = invoke("ready")
    assert exit_code == 1
    assert "postgresql:responseTime: fail" in output
    assert "db-pw-123" not in output


def test_invalid_settings_are_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTH_CHECK_TIMEOUT", "soon")
    for args in (["ready"], ["live", "--url", "http://127.0.0.1:1"]):
        exit_code, output = invoke(*args)
        assert exit_code == 2
        assert "HEALTH_CHECK_TIMEOUT" in output
        assert "Traceback" not in output


def test_url_asks_a_running_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTH_TOKEN", "cli-token-123")
    body = json.dumps(
        {"status": "warn", "checks": {"db:responseTime": [{"status": "pass", "observedValue": 2}]}}
    ).encode()
    with http_status_server(200, body, "application/health+json") as base:
        exit_code, output = invoke("ready", "--url", base)
        assert (exit_code, output.splitlines()[0]) == (0, "ready: warn")
        exit_code, output = invoke("report", "--url", f"{base}/custom/ready")
        assert exit_code == 0
        assert "db:responseTime" in output
    with http_status_server(503, b'{"status": "fail"}', "application/health+json") as base:
        assert invoke("live", "--url", base) == (1, "live: fail (HTTP 503)\n")


def test_url_sends_the_token_to_the_probe_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server

    monkeypatch.setenv("HEALTH_TOKEN", "cli-token-123")
    seen: list[tuple[str, str | None]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "pass"}')

        def log_message(self, format: str, *args: object) -> None:
            pass

    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert invoke("ready", "--url", base)[0] == 0
        assert invoke("live", "--url", base + "/")[0] == 0
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [
        ("/readyz", "Bearer cli-token-123"),
        ("/livez", "Bearer cli-token-123"),
    ]


def test_url_unreachable_or_silent_fails_within_the_timeout() -> None:
    exit_code, output = invoke("ready", "--url", f"http://127.0.0.1:{free_port()}")
    assert exit_code == 1
    assert "cannot reach" in output
    with silent_tcp_server() as port:
        exit_code, output = invoke("ready", "--url", f"http://127.0.0.1:{port}", "--timeout", "0.5")
    assert exit_code == 1


def test_url_usage_errors() -> None:
    assert invoke("ready", "--url", "ftp://x")[0] == 2
    assert invoke("ready", "--url", "http://x", "--registry", "a:b")[0] == 2
    assert invoke("ready", "--timeout", "0")[0] == 2
