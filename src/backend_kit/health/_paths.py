"""Where the health endpoints live, shared by the adapters, the CLI and Sentry."""

from __future__ import annotations

from dataclasses import dataclass

from backend_kit._settings import Settings

__all__ = ["HealthPaths", "health_paths"]


@dataclass(frozen=True)
class HealthPaths:
    """The URL paths of the health endpoints, ``HEALTH_PATH_PREFIX`` included."""

    live: str
    ready: str
    report: str
    startup: str
    #: Where the metrics are served (``METRICS_PATH``; only with ``METRICS_ENABLED``).
    metrics: str = "/metrics"

    def all(self) -> frozenset[str]:
        """Every operational path (health and metrics), for quick membership tests:
        kept out of Sentry tracing and logged at debug level."""
        return frozenset((self.live, self.ready, self.report, self.startup, self.metrics))


def health_paths(settings: Settings) -> HealthPaths:
    """``/livez``, ``/readyz``, ``/healthz`` (the detailed report) and ``/startupz``
    under ``HEALTH_PATH_PREFIX``.

    Examples:
        >>> from backend_kit import load_settings
        >>> health_paths(load_settings(health_path_prefix="/ops")).ready
        '/ops/readyz'
    """
    prefix = settings.health_path_prefix.rstrip("/")
    return HealthPaths(
        live=f"{prefix}/livez",
        ready=f"{prefix}/readyz",
        report=f"{prefix}/healthz",
        startup=f"{prefix}/startupz",
        metrics=settings.metrics_path,
    )
