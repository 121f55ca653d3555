"""Keeps a failing cache server from slowing every call: rate-limited warnings and a
cool-down during which the server is not contacted at all."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from backend_kit._forksafe import reset_in_child

__all__ = ["CircuitBreaker"]

logger = structlog.get_logger("backend_kit.cache")


class CircuitBreaker:
    """Counts consecutive failures of one cache server.

    After *threshold* consecutive failures the server is skipped for *cooldown* seconds;
    then one call probes it: success closes the breaker, failure opens it again. At most
    one ``cache_unavailable`` warning is logged per *warn_interval* seconds, carrying the
    number of failures since the previous one; ``cache_recovered`` is logged when the
    server answers again.
    """

    def __init__(
        self,
        *,
        backend: str,
        threshold: int = 3,
        cooldown: float = 10.0,
        warn_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or cooldown < 0 or warn_interval < 0:
            raise ValueError("threshold must be at least 1; cooldown and warn_interval >= 0")
        self.backend = backend
        self.threshold = threshold
        self.cooldown = cooldown
        self.warn_interval = warn_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._last_warning: float | None = None
        self._unreported = 0
        reset_in_child(self)

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        """True while the server is being skipped."""
        return self._open_until > self._clock()

    def allow(self) -> bool:
        """May the server be contacted now? While open, False; once the cool-down is
        over, True for one probing call, then False until that call reports back."""
        if not self._open_until:
            return True
        with self._lock:
            now = self._clock()
            if now < self._open_until:
                return False
            # Let exactly one caller probe; the others keep skipping until it reports.
            self._open_until = now + self.cooldown
            return True

    def success(self) -> None:
        """The server answered."""
        if not self._failures:
            return
        with self._lock:
            if not self._failures:
                return
            failures, self._failures, self._open_until = self._failures, 0, 0.0
            self._last_warning, self._unreported = None, 0
        logger.info("cache_recovered", backend=self.backend, failures=failures)

    def failure(self, error: BaseException) -> None:
        """The server failed (connection refused, timeout, protocol error...)."""
        with self._lock:
            now = self._clock()
            self._failures += 1
            self._unreported += 1
            if self._failures >= self.threshold:
                self._open_until = now + self.cooldown
            due = self._last_warning is None or now - self._last_warning >= self.warn_interval
            if not due:
                return
            self._last_warning, failures, self._unreported = now, self._unreported, 0
            skipping = self._open_until > now
        from backend_kit._redact import get_redactor

        logger.warning(
            "cache_unavailable",
            backend=self.backend,
            error=type(error).__name__,
            detail=get_redactor().redact_text(str(error)),
            failures=failures,
            skipped_for=self.cooldown if skipping else 0.0,
            effect="cached calls run their loader directly until the cache answers again",
        )
