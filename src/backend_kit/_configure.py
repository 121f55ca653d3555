"""`configure()`: the one call that wires every module to the same settings."""

from __future__ import annotations

from ._settings import Settings, get_settings, set_active_settings

__all__ = ["configure", "reset"]


def configure(settings: Settings | None = None) -> Settings:
    """Make *settings* the active settings of every backend_kit module.

    With no argument, the settings are loaded from the environment (see
    `backend_kit.load_settings`). Safe to call more than once: the last call wins.
    Returns the settings now active.

    Raises `backend_kit.ConfigError` when the settings must be loaded and are invalid.
    """
    active = settings if settings is not None else get_settings()
    set_active_settings(active)
    return active


def reset() -> None:
    """Forget the active settings and every configuration made from them."""
    set_active_settings(None)
