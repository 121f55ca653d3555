"""The process-wide state of the Django integration, built once in ``ready()``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from backend_kit._active import active_settings_or_none
from backend_kit._cache import default_cache
from backend_kit._class_import import import_settings_class
from backend_kit._configure import configure
from backend_kit._forksafe import after_fork_in_child
from backend_kit._requests import RequestLogger
from backend_kit._settings import Settings
from backend_kit.health import (
    HealthCheck,
    HealthRegistry,
    HealthRunner,
    cache_check,
    health_paths,
    sentry_check,
)

__all__ = ["DjangoState", "Probe", "health_registry", "setup", "state"]

Probe = Literal["live", "ready", "report", "startup", "metrics"]


@dataclass(frozen=True)
class DjangoState:
    settings: Settings
    health: HealthRegistry
    health_runner: HealthRunner
    request_logger: RequestLogger
    #: Health path -> probe, looked up on every request by the middleware.
    health_probes: dict[str, Probe]


_lock = threading.Lock()
_state: DjangoState | None = None


def state() -> DjangoState:
    """The integration's state; set up on first use if Django's ``ready()`` has not run."""
    return _state if _state is not None else setup()


def health_registry() -> HealthRegistry:
    """The registry the readiness probe runs: add a service's own checks to it, for
    example from its ``AppConfig.ready()``."""
    return state().health


def setup(settings: Settings | None = None) -> DjangoState:
    """Configure logging and Sentry from *settings* and register every ``DATABASES`` and
    ``CACHES`` alias as a readiness check.

    Without *settings*: the active settings when they are of the class named by the
    Django setting ``BACKEND_KIT_SETTINGS``, else that class loaded from the
    environment. Safe to call again (tests do): the last call wins.
    """
    global _state
    from django.conf import settings as django_settings

    if settings is None:
        path = getattr(django_settings, "BACKEND_KIT_SETTINGS", "backend_kit.Settings")
        cls = import_settings_class(path)
        active = active_settings_or_none()
        settings = active if isinstance(active, cls) else cls()
    configure(settings, sentry_integrations=_sentry_integrations(settings))
    registry = HealthRegistry(django_checks(settings))
    with _lock:
        _state = DjangoState(
            settings=settings,
            health=registry,
            health_runner=HealthRunner(registry, settings=settings),
            request_logger=RequestLogger(settings),
            health_probes=_health_probes(settings),
        )
        return _state


def _health_probes(settings: Settings) -> dict[str, Probe]:
    paths = health_paths(settings)
    probes: dict[str, Probe] = {
        paths.live: "live",
        paths.ready: "ready",
        paths.report: "report",
        paths.startup: "startup",
    }
    if settings.metrics_enabled:
        probes[paths.metrics] = "metrics"
    return probes


def _sentry_integrations(settings: Settings) -> list[Any]:
    if settings.sentry_dsn is None:
        return []  # sentry_sdk is not even imported
    from sentry_sdk.integrations.django import DjangoIntegration

    return [DjangoIntegration()]


def django_checks(settings: Settings) -> list[HealthCheck]:
    """A datastore check per ``DATABASES`` alias and a cache check per ``CACHES`` alias,
    plus backend_kit's own cache when it is shared (``CACHE_URL=redis://…``)."""
    from django.conf import settings as django_settings

    checks = [_database_check(alias) for alias in django_settings.DATABASES]
    checks += [_django_cache_check(alias) for alias in django_settings.CACHES]
    if settings.cache_url.scheme != "memory":
        checks.append(cache_check(default_cache(), name="backend_kit-cache"))
    if settings.sentry_dsn is not None:
        checks.append(sentry_check())
    return checks


def _database_check(alias: str) -> HealthCheck:
    def run() -> tuple[float, str]:
        from django.db import connections

        connection = connections[alias]
        started = time.perf_counter()
        try:
            with connection.cursor() as cursor:
                if connection.vendor == "sqlite":
                    # Reading the schema takes a lock on the file, as real queries do
                    # (SELECT 1 would pass on a locked database), and finds an empty
                    # file left where the database was.
                    cursor.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
                    (tables,) = cursor.fetchone()
                    if not tables and not connection.is_in_memory_db():
                        raise RuntimeError(
                            "the SQLite database has no tables: the file is empty or not "
                            "the application's database (was it moved, or not migrated?)"
                        )
                else:
                    cursor.execute("SELECT 1")
                    cursor.fetchone()
        finally:
            # Checks run on the health runner's threads: a connection left open there
            # would never be reused or closed.
            connection.close()
            if connection.connection is not None:
                # SQLite's close() keeps an in-memory database open (closing would drop
                # it); this thread's own connection to it would wait for the collector.
                from django.db.backends.base.base import BaseDatabaseWrapper

                BaseDatabaseWrapper.close(connection)
        return round((time.perf_counter() - started) * 1000.0, 3), "ms"

    return HealthCheck(
        name=f"database-{alias}", run=run, component_type="datastore", measurement="responseTime"
    )


def _django_cache_check(alias: str) -> HealthCheck:
    def run() -> Any:
        from django.core.cache import caches

        return cache_check(caches[alias]).run()

    return HealthCheck(
        name=f"cache-{alias}", run=run, component_type="cache", measurement="responseTime"
    )


@after_fork_in_child
def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
