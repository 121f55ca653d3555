"""The active settings, and the one lock that guards the library's configuration state.

The settings are the ones passed to `backend_kit.configure`, or loaded implicitly. The
same lock (`state_lock`) is held by `configure`, `reset`, `configure_logging` and
`configure_sentry` while they change what they own, so no reader sees half of a
change. A module that needs the settings calls `get_settings()` or
`active_settings_or_none()`; nothing reads the slot's variables directly.

Before `configure()`, `get_settings(cls)` loads *cls* from the environment and keeps it
as the implicit settings. The implicit settings never pin a class: a later
`get_settings(AppSettings)` replaces implicitly loaded base `Settings` with an
``AppSettings`` instance (so ``MYAPP_CACHE_URL`` takes effect), and only settings passed
to `configure()` make `get_settings(OtherClass)` raise.
"""

from __future__ import annotations

import threading
from typing import TypeVar, overload

from ._forksafe import after_fork_in_child
from ._redact import Redactor
from ._settings import Settings, load_settings, qualified_name

__all__ = [
    "active_settings_or_none",
    "get_redactor",
    "get_settings",
    "is_configured",
    "reset_redactor",
    "set_active_settings",
    "state_lock",
]

S = TypeVar("S", bound=Settings)

_lock = threading.RLock()
# The settings passed to configure(), or None.
_configured: Settings | None = None
# Settings loaded from the environment on first use, while nothing is configured.
_implicit: Settings | None = None
# The redactor built for the current settings, with the settings it was built from.
_redactor: tuple[Settings, Redactor] | None = None


@overload
def get_settings() -> Settings: ...
@overload
def get_settings(cls: type[S]) -> S: ...
def get_settings(cls: type[Settings] | None = None) -> Settings:
    """The active settings: those passed to `backend_kit.configure`, else loaded once
    from the environment (with *cls*, default `Settings`).

    Raises `ConfigError` when loading fails, and `TypeError` when the configured
    settings are not an instance of *cls*.
    """
    global _implicit
    active = _configured if _configured is not None else _implicit
    if active is not None and (cls is None or isinstance(active, cls)):
        return active
    with _lock:
        if _configured is not None:
            active = _configured
            if cls is not None and not isinstance(active, cls):
                raise TypeError(
                    f"the active settings are {qualified_name(type(active))}, not "
                    f"{qualified_name(cls)}; pass an instance of {cls.__name__} "
                    "to backend_kit.configure()"
                )
            return active
        if _implicit is None or (cls is not None and not isinstance(_implicit, cls)):
            # Nothing configured: load (or re-load, as the more specific class asked
            # for) from the environment, so no early caller pins the base class.
            _implicit = load_settings(cls or Settings)
        return _implicit


def set_active_settings(settings: Settings | None) -> Settings | None:
    """Make *settings* the configured settings; returns the previous active ones.
    ``None`` forgets both the configured and the implicitly loaded settings."""
    global _configured, _implicit
    with _lock:
        previous = _configured if _configured is not None else _implicit
        _configured = settings
        _implicit = None
    return previous


def active_settings_or_none() -> Settings | None:
    """The settings in use now (configured or implicitly loaded), without loading any."""
    configured = _configured
    return configured if configured is not None else _implicit


def is_configured() -> bool:
    """True once settings were passed to `backend_kit.configure` (and not reset since)."""
    return _configured is not None


def state_lock() -> threading.RLock:
    """The lock guarding backend_kit's configuration state (re-entrant; renewed in a
    forked child)."""
    return _lock


ActiveSnapshot = tuple["Settings | None", "Settings | None"]


def snapshot_active() -> ActiveSnapshot:
    """What `restore_active` needs to put the current settings back exactly."""
    with _lock:
        return (_configured, _implicit)


def restore_active(snapshot: ActiveSnapshot) -> None:
    """Put back the settings `snapshot_active` saw (configured or implicit, as they were)."""
    global _configured, _implicit
    with _lock:
        _configured, _implicit = snapshot


def get_redactor() -> Redactor:
    """The redactor for the active settings (see `backend_kit.get_settings`)."""
    global _redactor
    settings = get_settings()
    cached = _redactor
    if cached is not None and cached[0] is settings:
        return cached[1]
    redactor = Redactor.from_settings(settings)
    with _lock:
        _redactor = (settings, redactor)
    return redactor


def reset_redactor() -> None:
    """Forget the cached redactor; the next `get_redactor` builds one from the settings."""
    global _redactor
    with _lock:
        _redactor = None


@after_fork_in_child
def _reset_after_fork() -> None:
    global _lock
    _lock = threading.RLock()
