"""Helpers for testing code that uses backend_kit. Public API.

Examples:
    >>> from backend_kit.testing import override_settings
    >>> with override_settings(service_name="billing") as settings:
    ...     settings.service_name
    'billing'
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ._active import get_settings, restore_active, set_active_settings, snapshot_active
from ._settings import Settings, replace_settings

if TYPE_CHECKING:
    from sentry_sdk.envelope import Envelope

__all__ = [
    "SentryCapture",
    "capture_logs",
    "capture_sentry_events",
    "memory_cache",
    "override_settings",
    "reset",
    "retries",
]


def reset() -> None:
    """Forget everything backend_kit holds between calls: the active settings, logging
    (structlog and the standard library as they were before), Sentry, the redaction
    policy, the default caches with their circuit breakers, each cached function's
    backend, memory cache and counters, the memory caches' namespace versions, every
    health runner's last results, and the health lifecycle (draining, startup).

    For a fixture run around each test (the pytest plugin's ``backend_kit_isolation``),
    so no test sees another's configuration. Data stored in Redis is left alone.
    """
    from ._cache._reset import reset_caches
    from ._configure import reset as reset_configuration
    from .health._lifecycle import reset_lifecycle
    from .health._runner import forget_health_results

    reset_configuration()
    reset_caches()
    forget_health_results()
    reset_lifecycle()


@contextmanager
def override_settings(**values: Any) -> Iterator[Settings]:
    """Make a validated copy of the active settings with *values* changed the active
    settings for the duration of the block, then restore the previous ones.

    Nested fields are reached with ``__``: ``override_settings(db__port=6543)``.
    Raises `backend_kit.ConfigError` when a value is invalid.
    """
    current = get_settings()
    changed = replace_settings(current, **values)
    previous = snapshot_active()
    set_active_settings(changed)
    try:
        yield changed
    finally:
        restore_active(previous)


@contextmanager
def retries(attempts: int = 1) -> Iterator[None]:
    """Inside the block, retries never sleep and make at most *attempts* attempts, so a
    test suite exercising retried code runs at full speed.

    Under pytest, the ``backend_kit_retries`` fixture does the same for one test.
    Raises `ValueError` when *attempts* is less than 1.

    Examples:
        >>> import backend_kit
        >>> from backend_kit.testing import retries
        >>> calls = []
        >>> @backend_kit.retry(on=ConnectionError)
        ... def flaky() -> None:
        ...     calls.append(1)
        ...     raise ConnectionError("down")
        >>> with retries(attempts=2):
        ...     flaky()
        Traceback (most recent call last):
        ConnectionError: down
        >>> len(calls)
        2
    """
    from ._retry import override_retries

    with override_retries(attempts):
        yield


@contextmanager
def memory_cache() -> Iterator[None]:
    """Make every `backend_kit.cached` function (without an explicit ``cache=``) and
    `backend_kit.default_cache` use fresh, empty in-memory caches for the block,
    whatever ``CACHE_URL`` says. Nothing cached inside the block is seen after it: the
    in-memory caches start empty again, and a Redis cache is used again if configured.

    Examples:
        >>> from backend_kit import cached
        >>> from backend_kit.testing import memory_cache
        >>> @cached(ttl=60)
        ... def answer() -> int:
        ...     return 42
        >>> with memory_cache():
        ...     answer(), answer.cache_info().loads
        (42, 1)
    """
    from ._cache import use_memory_only

    use_memory_only(True)
    try:
        yield
    finally:
        use_memory_only(False)


@contextmanager
def capture_logs() -> Iterator[list[dict[str, Any]]]:
    """Collect log events instead of writing them, for the duration of the block.

    Each item is the event exactly as it would be written (timestamp, level, event,
    logger, service, environment, request context, fields), after redaction, from
    structlog and standard-library loggers alike. Logging is configured from the active
    settings for the block when it was not configured already.

    Examples:
        >>> from backend_kit import get_logger
        >>> with capture_logs() as logs:
        ...     get_logger("billing").warning("card_declined", password="hunter2")
        >>> logs[0]["event"], logs[0]["password"]
        ('card_declined', '***')
    """
    from ._logging import capture_events

    with capture_events() as events:
        yield cast("list[dict[str, Any]]", events)


@dataclass
class SentryCapture:
    """What sentry-sdk handed to its transport during `capture_sentry_events`."""

    #: Error and message events (``event`` envelope items), after the redaction hooks.
    events: list[dict[str, Any]] = field(default_factory=list)
    #: Transactions (``transaction`` envelope items).
    transactions: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def breadcrumbs(self) -> list[dict[str, Any]]:
        """The breadcrumbs attached to the captured events, in order."""
        crumbs: list[dict[str, Any]] = []
        for event in self.events:
            values = (event.get("breadcrumbs") or {}).get("values") or []
            crumbs.extend(values)
        return crumbs

    def _record(self, envelope: Envelope) -> None:
        with self._lock:
            for item in envelope.items:
                payload = item.payload.json
                if payload is None:
                    continue
                if item.type == "event":
                    self.events.append(payload)
                elif item.type == "transaction":
                    self.transactions.append(payload)


@contextmanager
def capture_sentry_events(settings: Settings | None = None) -> Iterator[SentryCapture]:
    """Configure Sentry with a stub transport for the block and collect what would be sent.

    Uses *settings* (default: the active settings); no DSN is needed and nothing leaves
    the process. Everything else is the real configuration: redaction hooks, request id
    tags, log forwarding. On exit, the previous Sentry configuration (or none) is
    restored.

    Examples:
        >>> from backend_kit import get_logger
        >>> with capture_sentry_events() as sentry, capture_logs():
        ...     get_logger("billing").error("payment_failed", order=7)
        >>> sentry.events[0]["logentry"]["message"], sentry.events[0]["extra"]["order"]
        ('payment_failed', 7)
    """
    from sentry_sdk.transport import Transport

    from ._sentry import configure_sentry, last_configure_call, reset_sentry

    capture = SentryCapture()

    class _StubTransport(Transport):
        def capture_envelope(self, envelope: Envelope) -> None:
            capture._record(envelope)

    previous = last_configure_call()
    active = settings if settings is not None else get_settings()
    dsn = (
        active.sentry_dsn.get_secret_value()
        if active.sentry_dsn
        else "https://public@sentry.invalid/0"
    )
    configure_sentry(active, dsn=dsn, transport=_StubTransport(), shutdown_timeout=0)
    try:
        yield capture
    finally:
        reset_sentry(timeout=0)
        if previous is not None:
            configure_sentry(**previous)
