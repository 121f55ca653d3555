"""The health+json report: format, public versus detailed, redaction, rendering."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from backend_kit import load_settings
from backend_kit.health import (
    CONTENT_TYPE,
    HealthCheck,
    HealthRegistry,
    HealthReport,
    HealthRunner,
    Observation,
    details_allowed,
)
from backend_kit.health._report import render_table
from backend_kit.testing import override_settings
from tests.health_support import Spy, assert_valid_health_json

DSN = "postgresql://billing:hunter2-pg-password@db-7.internal.example:5432/billing"


def leaky_registry() -> HealthRegistry:
    def database() -> None:
        raise ConnectionError(f"could not connect to {DSN}: connection refused")

    return HealthRegistry(
        [
            HealthCheck("postgresql", run=database, component_type="datastore"),
            HealthCheck(
                "search",
                run=lambda: Observation(12.5, "ms"),
                component_type="http",
                critical=False,
                measurement="responseTime",
            ),
        ]
    )


def test_detailed_report_follows_the_draft() -> None:
    with override_settings(service_name="billing", release="1.4.2"):
        report = HealthRunner(leaky_registry(), cache_seconds=0).ready()
        data = report.to_dict(detailed=True)
    assert_valid_health_json(data)
    assert data["status"] == "fail"
    assert data["serviceId"] == "billing"
    assert data["releaseId"] == "1.4.2"
    database = data["checks"]["postgresql:status"][0]
    assert database["componentType"] == "datastore"
    assert database["status"] == "fail"
    assert database["output"].startswith("ConnectionError: could not connect to")
    search = data["checks"]["search:responseTime"][0]
    assert (search["observedValue"], search["observedUnit"], search["status"]) == (
        12.5,
        "ms",
        "pass",
    )
    assert "output" not in search
    assert search["time"].endswith("Z")
    assert CONTENT_TYPE == "application/health+json"


def test_error_text_goes_through_the_redaction_policy() -> None:
    with override_settings(database_url=DSN):
        report = HealthRunner(leaky_registry(), cache_seconds=0).ready()
    text = report.to_json(detailed=True).decode()
    assert "hunter2-pg-password" not in text
    assert "***" in text


def test_public_answer_reveals_nothing_beyond_the_status() -> None:
    with override_settings(service_name="billing", release="1.4.2"):
        report = HealthRunner(leaky_registry(), cache_seconds=0).ready()
    public = report.to_json(detailed=False)
    assert json.loads(public) == {"status": "fail"}
    for secret in (b"db-7", b"billing", b"1.4.2", b"ConnectionError", b"postgresql"):
        assert secret not in public
    assert_valid_health_json(json.loads(public))


@pytest.mark.parametrize(("status", "http_status"), [("pass", 200), ("warn", 200), ("fail", 503)])
def test_http_status(status: str, http_status: int) -> None:
    report = HealthReport(status=status, probe="ready")  # type: ignore[arg-type]
    assert report.http_status == http_status
    assert report.passed is (status != "fail")


def test_details_need_the_right_bearer_token() -> None:
    settings = load_settings(health_token="tok-0123456789abcdef", environment="development")
    assert details_allowed("Bearer tok-0123456789abcdef", settings)
    assert details_allowed("bearer   tok-0123456789abcdef ", settings)
    for wrong in (
        None,
        "",
        "Bearer",
        "Bearer tok-0123456789abcdeX",
        "Bearer tok-0123456789abcdef0",
        "Basic tok-0123456789abcdef",
        "tok-0123456789abcdef",
        "Bearer tök",
    ):
        assert not details_allowed(wrong, settings), wrong


def test_without_a_token_details_only_in_development() -> None:
    assert details_allowed(None, load_settings(environment="development"))
    for environment in ("test", "staging", "production"):
        settings = load_settings(environment=environment)
        assert not details_allowed(None, settings)
        assert not details_allowed("Bearer anything", settings)


def test_details_allowed_reads_the_active_settings() -> None:
    with override_settings(environment="production"):
        assert not details_allowed(None)
    with override_settings(environment="development"):
        assert details_allowed(None)


def test_wrong_token_never_gets_details_end_to_end() -> None:
    """What an adapter does: the token decides which rendering is sent."""
    with override_settings(health_token="right-token-123", environment="development"):
        report = HealthRunner(leaky_registry(), cache_seconds=0).ready()
        body = report.to_json(detailed=details_allowed("Bearer wrong-token-123"))
        assert json.loads(body) == {"status": "fail"}
        body = report.to_json(detailed=details_allowed("Bearer right-token-123"))
        assert "checks" in json.loads(body)


def test_table_rendering() -> None:
    with override_settings(service_name="billing"):
        report = HealthRunner(leaky_registry(), cache_seconds=0).ready()
    console = Console(width=200, record=True, color_system=None)
    console.print(render_table(report))
    text = console.export_text()
    assert "billing: fail" in text
    assert "postgresql:status" in text
    assert "search:responseTime" in text
    assert "12.5 ms" in text
    assert "hunter2" not in text


def test_timeouts_read_from_the_settings() -> None:
    spy = Spy(hang=True)
    try:
        with override_settings(health_check_timeout=0.3, health_cache_seconds=0):
            report = HealthRunner(HealthRegistry([spy.check("db")])).ready()
        assert report.checks[0].output == "timed out after 0.3 s"
    finally:
        spy.release.set()


def test_settings_fields_validate() -> None:
    from backend_kit import ConfigError

    with pytest.raises(ConfigError, match="HEALTH_CHECK_TIMEOUT"):
        load_settings(health_check_timeout=0)
    with pytest.raises(ConfigError, match="HEALTH_PATH_PREFIX"):
        load_settings(health_path_prefix="ops")
    settings = load_settings()
    assert (settings.health_cache_seconds, settings.health_path_prefix) == (2.0, "")


def test_respond_builds_the_http_answer_for_an_adapter() -> None:
    with override_settings(health_token="right-token-123", service_name="billing"):
        runner = HealthRunner(leaky_registry(), cache_seconds=0)
        public = runner.respond("ready", "Bearer wrong-token-123")
        assert public.status_code == 503
        assert public.headers == {
            "Content-Type": "application/health+json",
            "Cache-Control": "no-store",
        }
        assert json.loads(public.body) == {"status": "fail"}
        detailed = runner.respond("ready", "Bearer right-token-123")
        data = json.loads(detailed.body)
        assert_valid_health_json(data)
        assert data["serviceId"] == "billing"
        assert "hunter2" not in detailed.body.decode()
        live = runner.respond("live")
        assert (live.status_code, json.loads(live.body)) == (200, {"status": "pass"})
        assert runner.respond("startup").status_code == 200
        with pytest.raises(ValueError, match="unknown probe 'health'"):
            runner.respond("health")  # type: ignore[arg-type]


def test_runner_from_settings() -> None:
    settings = load_settings(cache_url="redis://127.0.0.1:6379/0", environment="development")
    runner = HealthRunner.from_settings(settings)
    assert [c.key for c in runner.registry] == ["cache:responseTime"]


def test_report_probe_challenges_a_caller_without_credentials() -> None:
    import orjson

    with override_settings(health_token="right-token-123", service_name="billing"):
        runner = HealthRunner(leaky_registry(), cache_seconds=0)
        denied = runner.respond("report", "Bearer wrong-token-123")
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"] == 'Bearer realm="health"'
        assert orjson.loads(denied.body) == {"status": "fail"}
        allowed = runner.respond("report", "Bearer right-token-123")
        assert allowed.status_code == 503
        assert orjson.loads(allowed.body)["serviceId"] == "billing"
