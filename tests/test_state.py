"""One place for backend_kit's state: is_configured, reset, and testing.reset."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import structlog
from pydantic_settings import SettingsConfigDict

import backend_kit
from backend_kit import Settings, cached, default_cache, get_settings
from backend_kit._cache import MemoryCache, RedisCache
from backend_kit.health import HealthCheck, HealthRunner
from backend_kit.testing import reset


class AppSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="MYAPP_")


def test_is_configured_and_reset_are_public() -> None:
    assert backend_kit.is_configured() is False
    backend_kit.configure(backend_kit.load_settings(service_name="billing"))
    assert backend_kit.is_configured() is True
    assert get_settings().service_name == "billing"
    backend_kit.reset()
    assert backend_kit.is_configured() is False
    assert get_settings().service_name != "billing"
    backend_kit.reset()  # safe when nothing is configured
    assert backend_kit.is_configured() is False


def test_an_implicit_load_does_not_pin_the_base_class(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("MYAPP_CACHE_URL", redis_url)
    monkeypatch.setenv("MYAPP_CACHE_KEY_PREFIX", f"state-{uuid.uuid4().hex}:")

    @cached(ttl=60)
    def early(n: int) -> int:
        return n

    # A module-level call made before anything is configured loads base Settings...
    assert early(1) == 1
    assert type(get_settings()) is Settings
    assert isinstance(default_cache(), MemoryCache)
    # ...which must not stop the application's own class from being used afterwards.
    app_settings = get_settings(AppSettings)
    assert type(app_settings) is AppSettings
    assert get_settings() is app_settings
    assert backend_kit.is_configured() is False
    assert isinstance(default_cache(), RedisCache)
    assert early(2) == 2
    assert early(2) == 2
    assert early.cache_info().loads == 2  # one memory miss, then one Redis miss


def test_configured_settings_of_another_class_still_raise() -> None:
    backend_kit.configure(backend_kit.load_settings())
    with pytest.raises(TypeError, match=r"not tests\.test_state\.AppSettings"):
        get_settings(AppSettings)


def test_override_settings_restores_the_implicit_settings() -> None:
    from backend_kit.testing import override_settings

    implicit = get_settings()
    with override_settings(service_name="billing"):
        assert get_settings().service_name == "billing"
    assert get_settings() is implicit
    assert backend_kit.is_configured() is False


def test_testing_reset_forgets_the_cache_tables_bindings_and_counters() -> None:
    runs: list[int] = []

    @cached(ttl=600, namespace="statetest")
    def square(n: int) -> int:
        runs.append(n)
        return n * n

    assert square(3) == 9
    assert square(3) == 9
    square.invalidate_namespace()
    assert square(3) == 9
    shared = default_cache()
    shared.set("k", "v", ttl=600)
    assert runs == [3, 3]
    assert square.cache_info().loads == 2

    reset()

    assert square.cache_info().loads == 0
    assert square.cache_info().hits == 0
    assert default_cache() is not shared
    assert default_cache().get("k") is None
    assert square(3) == 9  # the function's memory cache starts empty again
    assert runs == [3, 3, 3]
    from backend_kit._cache import _memory

    assert _memory._namespace_versions == {}


def test_testing_reset_forgets_health_results() -> None:
    calls: list[int] = []
    runner = HealthRunner([HealthCheck("counted", run=lambda: calls.append(1))], cache_seconds=600)
    assert runner.ready().status == "pass"
    assert runner.ready().status == "pass"
    assert len(calls) == 1  # the second probe used the remembered result
    reset()
    assert runner.ready().status == "pass"
    assert len(calls) == 2


def test_reset_logging_restores_the_users_structlog_configuration() -> None:
    def user_processor(logger: object, method: str, event_dict: dict[str, object]) -> str:
        return "user:" + str(event_dict["event"])

    structlog.configure(processors=[user_processor], cache_logger_on_first_use=False)
    try:
        before = dict(structlog.get_config())
        backend_kit.configure_logging(format="json")
        assert structlog.get_config()["processors"] != before["processors"]
        backend_kit.configure_logging(format="console")  # twice: still restores the user's
        backend_kit.reset()
        after = structlog.get_config()
        assert after["processors"] == [user_processor]
        assert after["cache_logger_on_first_use"] is False
    finally:
        structlog.reset_defaults()


def test_reset_logging_without_a_user_configuration_restores_the_defaults() -> None:
    assert not structlog.is_configured()
    backend_kit.configure_logging(format="json")
    backend_kit.reset()
    assert not structlog.is_configured()


def test_the_pytest_plugin_isolation_fixture(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        "import pytest\n\n\n"
        "@pytest.fixture(autouse=True)\n"
        "def _isolated(backend_kit_isolation):\n"
        "    yield\n"
    )
    (tmp_path / "test_two.py").write_text(
        "import backend_kit\n\n\n"
        "def test_configures():\n"
        "    backend_kit.configure(backend_kit.load_settings(service_name='leaky'))\n"
        "    assert backend_kit.is_configured()\n\n\n"
        "def test_sees_nothing():\n"
        "    assert not backend_kit.is_configured()\n"
        "    assert backend_kit.get_settings().service_name != 'leaky'\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            *["-p", "no:django"],
        ],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
