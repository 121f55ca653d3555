"""Health checks: liveness, readiness and startup probes, and a detailed report.

Framework-free: the Flask and Django integrations and the ``backend-kit health``
command serve what this package computes.

Examples:
    >>> from backend_kit.health import HealthRegistry, HealthRunner
    >>> registry = HealthRegistry()
    >>> @registry.check(component_type="http", critical=False)
    ... def payments() -> None:
    ...     pass
    >>> HealthRunner(registry).ready().status
    'pass'
"""

from __future__ import annotations

from ._builtins import (
    CacheLike,
    cache_check,
    callable_check,
    checks_from_settings,
    disk_space_check,
    http_check,
    memory_check,
    postgres_check,
    redis_check,
    sentry_check,
    sqlite_check,
)
from ._checks import (
    CheckResult,
    CheckStatus,
    ComponentType,
    HealthCheck,
    HealthRegistry,
    Observation,
)
from ._lifecycle import (
    install_sigterm_handler,
    is_draining,
    is_started,
    mark_started,
    mark_starting,
    start_draining,
)
from ._paths import HealthPaths, health_paths
from ._report import CONTENT_TYPE, HealthHTTPResponse, HealthReport, details_allowed
from ._runner import HealthRunner

__all__ = [
    "CONTENT_TYPE",
    "CacheLike",
    "CheckResult",
    "CheckStatus",
    "ComponentType",
    "HealthCheck",
    "HealthHTTPResponse",
    "HealthPaths",
    "HealthRegistry",
    "HealthReport",
    "HealthRunner",
    "Observation",
    "cache_check",
    "callable_check",
    "checks_from_settings",
    "details_allowed",
    "disk_space_check",
    "health_paths",
    "http_check",
    "install_sigterm_handler",
    "is_draining",
    "is_started",
    "mark_started",
    "mark_starting",
    "memory_check",
    "postgres_check",
    "redis_check",
    "sentry_check",
    "sqlite_check",
    "start_draining",
]
