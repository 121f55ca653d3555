"""`configure()`: the one call that wires every module to the same settings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import _metric_hooks
from ._active import get_settings, is_configured, reset_redactor, set_active_settings, state_lock
from ._errors import ConfigError, ConfigProblem
from ._logging import configure_logging, reset_logging
from ._sentry import configure_sentry, reset_sentry
from ._settings import Settings

__all__ = ["configure", "is_configured", "reset"]


def configure(
    settings: Settings | None = None, *, sentry_integrations: Iterable[Any] = ()
) -> Settings:
    """Make *settings* the active settings of every backend_kit module.

    With no argument, the settings are loaded from the environment (see
    `backend_kit.load_settings`). Safe to call more than once: the last call wins.
    Returns the settings now active.

    Then configures, in this order, structured logging (`configure_logging`) and
    Sentry (`configure_sentry`, a no-op without ``SENTRY_DSN``), then metrics
    (`backend_kit.metrics.configure_metrics`, only with ``METRICS_ENABLED``), with
    *sentry_integrations* added to sentry-sdk's defaults (the framework adapters pass
    their framework's integration).

    Raises `backend_kit.ConfigError` when the settings must be loaded and are invalid.
    """
    with state_lock():
        active = settings if settings is not None else get_settings()
        set_active_settings(active)
        configure_logging(active)
        configure_sentry(active, integrations=sentry_integrations)
        if active.metrics_enabled or _metric_hooks.recorder is not None:
            try:
                from .metrics import configure_metrics
            except ImportError:
                problem = ConfigProblem(
                    "METRICS_ENABLED",
                    'needs prometheus_client: pip install "backend-kit[metrics]", or unset it',
                    "settings",
                )
                raise ConfigError([problem]) from None
            configure_metrics(active)
    return active


def reset() -> None:
    """Forget the active settings and every configuration made from them: Sentry is
    closed, logging restored to what it was before `configure` (structlog's and the
    standard library's), the redaction policy dropped. Safe to call when nothing is
    configured. `backend_kit.testing.reset` also empties caches and health state."""
    with state_lock():
        _metric_hooks.recorder = None
        reset_sentry()
        reset_logging()
        reset_redactor()
        set_active_settings(None)
