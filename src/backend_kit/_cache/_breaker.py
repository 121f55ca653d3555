"""Keeps a failing cache server from slowing every call: rate-limited warnings, and
half-open probing so that the server is contacted again as soon as it answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog

from backend_kit import _metric_hooks
from backend_kit._forksafe import reset_in_child

__all__ = ["CircuitBreaker"]

logger = structlog.get_logger("backend_kit.cache")


class CircuitBreaker:
    """Counts consecutive failures of one cache server.

    After *threshold* consecutive failures the breaker opens: the server is skipped.
    Every *probe_interval* seconds one call is let through as a probe (half-open):
    success closes the breaker, failure keeps it open until the next probe. A probe
    that never reports back (its caller was cancelled) frees its slot after
    *probe_interval* too. At most one ``cache_unavailable`` warning is logged per
    *warn_interval* seconds, carrying the number of failures since the previous one;
    ``cache_recovered`` is logged when the server answers again, and *on_recovered*
    (if given) is called.
    """

    def __init__(
        self,
        *,
        backend: str,
        threshold: int = 3,
        probe_interval: float = 0.5,
        warn_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_recovered: Callable[[], None] | None = None,
    ) -> None:
        if threshold < 1 or probe_interval < 0 or warn_interval < 0:
            raise ValueError("threshold must be at least 1; probe_interval and warn_interval >= 0")
        self.backend = backend
        self.threshold = threshold
        self.probe_interval = probe_interval
        self.warn_interval = warn_interval
        self._clock = clock
        self._on_recovered = on_recovered
        self._lock = threading.Lock()
        self._failures = 0
        # 0.0 while closed; else when the next probe may go through.
        self._next_probe = 0.0
        self._last_warning: float | None = None
        self._unreported = 0
        reset_in_child(self)

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Forget every failure and recreate the lock (for a child process after fork)."""
        self._lock = threading.Lock()
        self._failures, self._next_probe = 0, 0.0
        self._last_warning, self._unreported = None, 0

    @property
    def is_open(self) -> bool:
        """True while the server is being skipped (between probes)."""
        return self._next_probe > self._clock()

    @property
    def failing(self) -> bool:
        """True from the first failure until the server answers again."""
        return self._failures > 0

    def allow(self) -> bool:
        """May the server be contacted now? While open, False, except for one probing
        call per *probe_interval*."""
        if not self._next_probe:
            return True
        with self._lock:
            now = self._clock()
            if not self._next_probe:
                return True
            if now < self._next_probe:
                return False
            # Let exactly one caller probe; the others keep skipping until it reports
            # or the interval passes.
            self._next_probe = now + self.probe_interval
            return True

    def success(self) -> None:
        """The server answered."""
        if not self._failures:
            return
        with self._lock:
            if not self._failures:
                return
            failures, self._failures, self._next_probe = self._failures, 0, 0.0
            self._last_warning, self._unreported = None, 0
        recorder = _metric_hooks.recorder
        if recorder is not None and failures >= self.threshold:
            recorder.breaker_transition(self.backend, "open", "closed")
        if self._on_recovered is not None:
            self._on_recovered()
        logger.info("cache_recovered", backend=self.backend, failures=failures)

    def failure(self, error: BaseException) -> None:
        """The server failed (connection refused, timeout, protocol error...)."""
        with self._lock:
            now = self._clock()
            self._failures += 1
            self._unreported += 1
            if self._failures >= self.threshold:
                self._next_probe = now + self.probe_interval
            opened = self._failures == self.threshold
            due = self._last_warning is None or now - self._last_warning >= self.warn_interval
            if due:
                self._last_warning, failures, self._unreported = now, self._unreported, 0
                skipping = self._next_probe > now
        recorder = _metric_hooks.recorder
        if opened and recorder is not None:
            recorder.breaker_transition(self.backend, "closed", "open")
        if not due:
            return
        from backend_kit._active import get_redactor

        logger.warning(
            "cache_unavailable",
            backend=self.backend,
            error=type(error).__name__,
            detail=get_redactor().redact_text(str(error)),
            failures=failures,
            probing_every=self.probe_interval if skipping else 0.0,
            effect="cached calls use this process's memory cache until the server answers again",
        )
