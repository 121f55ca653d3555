"""Shared fixtures: a clean backend_kit and a clean environment for every test."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from backend_kit.testing import reset

# Variables a developer may have exported that would leak into the settings tests.
_SETTINGS_PREFIXES = (
    "SERVICE_NAME",
    "ENVIRONMENT",
    "DEBUG",
    "RELEASE",
    "LOG_",
    "REDACT_",
    "SENTRY_",
    "DATABASE_URL",
    "CACHE_URL",
    "HEALTH_TOKEN",
    "METRICS_",
    "PROMETHEUS_MULTIPROC_DIR",
    "CELERY_",
    "BACKEND_KIT_",
    "MYAPP_",
)


@pytest.fixture(autouse=True)
def _isolated_backend_kit(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """Every test starts unconfigured, in an empty directory, with no settings variables
    and no secrets directory, and leaves nothing configured behind."""
    for name in list(os.environ):
        if name.upper().startswith(_SETTINGS_PREFIXES):
            monkeypatch.delenv(name)
    workdir = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(workdir)
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir()
    monkeypatch.setenv("BACKEND_KIT_SECRETS_DIR", str(secrets_dir))
    reset()
    yield
    reset()


# Real services on loopback. Read once, before the fixture above hides DATABASE_URL.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _require_service(name: str, url: str) -> str:
    """Return *url* when the service answers; skip (fail under CI) when it does not."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    try:
        socket.create_connection((host, port or 0), timeout=2).close()
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port} ({exc.strerror or exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must provide it")
        pytest.skip(f"{reason}; start it or set the URL variable to run this test")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of the shared Redis (REDIS_URL, default redis://127.0.0.1:6379/0)."""
    return _require_service("Redis", REDIS_URL)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of the shared PostgreSQL (DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test)."""
    return _require_service("PostgreSQL", POSTGRES_URL)
