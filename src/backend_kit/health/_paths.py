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

    def all(self) -> frozenset[str]:
        """Every health path, for quick membership tests."""
        return frozenset((self.live, self.ready, self.report, self.startup))


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
    )
