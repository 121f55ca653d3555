"""Running probes: checks in parallel, bounded, shared and cached.

Every check has a slot holding its last result and, while it runs, the one run in
flight. A probe reuses a result younger than the cache interval, joins a run in flight,
or starts one in a daemon thread; it then waits for each run no longer than that run's
own timeout (counted from when the run started) and the probe's overall deadline. So a
hung dependency costs one thread per check, however many probes arrive, and never
holds a response past its timeout.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from backend_kit._forksafe import reset_in_child
from backend_kit._redact import Redactor, get_redactor

from ._checks import CheckResult, CheckStatus, HealthCheck, HealthRegistry, Observation
from ._lifecycle import is_draining, is_started
from ._report import CONTENT_TYPE, HealthHTTPResponse, HealthReport, details_allowed

if TYPE_CHECKING:
    from backend_kit._settings import Settings

    from ._builtins import CacheLike

__all__ = ["HealthRunner"]

_MAX_OUTPUT = 500


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _seconds(value: float) -> str:
    return f"{value:.3g} s"


def _observation(value: Any) -> Observation | None:
    if value is None or isinstance(value, Observation):
        return value
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str):
        return Observation(value[0], value[1])
    return Observation(value)


class _Slot:
    __slots__ = ("lock", "result", "result_at", "running", "started_at")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.result: CheckResult | None = None
        self.result_at = 0.0
        self.running: Future[CheckResult] | None = None
        self.started_at = 0.0


class HealthRunner:
    """Runs the probes of a service over the checks of *registry*.

    *cache_seconds*, *check_timeout* (for checks without their own) and *deadline*
    (for a whole probe) default to the ``HEALTH_CACHE_SECONDS``,
    ``HEALTH_CHECK_TIMEOUT`` and ``HEALTH_DEADLINE`` settings. *settings* defaults to
    the active settings (`backend_kit.get_settings`), read at every probe.

    Examples:
        >>> from backend_kit.health import HealthCheck, HealthRegistry
        >>> runner = HealthRunner(HealthRegistry([HealthCheck("answer", run=lambda: 42)]))
        >>> runner.ready().status
        'pass'
    """

    def __init__(
        self,
        registry: HealthRegistry | None = None,
        *,
        cache_seconds: float | None = None,
        check_timeout: float | None = None,
        deadline: float | None = None,
        settings: Settings | None = None,
    ) -> None:
        for label, value in (("check_timeout", check_timeout), ("deadline", deadline)):
            if value is not None and not value > 0:
                raise ValueError(f"{label} must be a positive number of seconds")
        if cache_seconds is not None and cache_seconds < 0:
            raise ValueError("cache_seconds must be zero (no caching) or more")
        self.registry = registry if registry is not None else HealthRegistry()
        self._cache_seconds = cache_seconds
        self._check_timeout = check_timeout
        self._deadline = deadline
        self._settings = settings
        self._redactor: Redactor | None = None
        self._slots: dict[HealthCheck, _Slot] = {}
        self._slots_lock = threading.Lock()
        reset_in_child(self)

    def _reset_after_fork(self) -> None:
        # The threads running checks stayed in the parent: their runs would never end
        # here. Forget every slot, so the child's first probe starts its own runs.
        self._slots = {}
        self._slots_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, cache_backend: CacheLike | None = None
    ) -> HealthRunner:
        """A runner over the checks the settings imply (see `checks_from_settings`);
        add your own to its ``registry``."""
        from ._builtins import checks_from_settings

        return cls(checks_from_settings(settings, cache_backend=cache_backend), settings=settings)

    # -- probes ---------------------------------------------------------------------

    def live(self) -> HealthReport:
        """Liveness: passes as long as the process can answer. Runs no check."""
        return self._report("live", "pass")

    def startup(self) -> HealthReport:
        """Startup: fails until startup is complete (see `mark_starting`). Runs no check."""
        if not is_started():
            return self._report("startup", "fail", output="starting")
        return self._report("startup", "pass")

    def ready(self) -> HealthReport:
        """Readiness: fails at once while starting or draining; otherwise runs every
        registered check. A critical failure fails it, a non-critical one makes it
        ``warn``."""
        if not is_started():
            return self._report("ready", "fail", output="starting")
        if is_draining():
            return self._report("ready", "fail", output="draining: shutting down")
        results = self.run_checks() + _open_circuit_results()
        status: CheckStatus = "pass"
        for result in results:
            if result.status == "fail" and result.check.critical:
                status = "fail"
                break
            if result.status != "pass":
                status = "warn"
        return self._report("ready", status, checks=tuple(results))

    def respond(
        self,
        probe: Literal["live", "ready", "startup", "report"],
        authorization: str | None = None,
    ) -> HealthHTTPResponse:
        """Run *probe* and build the HTTP answer a web framework sends as it is: 200 or
        503, ``application/health+json``, never cached by proxies.

        The detailed report is only for a caller whose ``Authorization`` header
        *authorization* is allowed it (see `details_allowed`); others get the status
        alone. ``"report"`` is readiness for people: a caller without the right
        credentials gets 401 with a ``WWW-Authenticate`` challenge and the status alone.

        Raises `ValueError` for an unknown probe name.
        """
        probes = {
            "live": self.live,
            "ready": self.ready,
            "startup": self.startup,
            "report": self.ready,
        }
        if probe not in probes:
            raise ValueError(f"unknown probe {probe!r}: expected live, ready, startup or report")
        report = probes[probe]()
        detailed = details_allowed(authorization, self._active_settings())
        headers = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"}
        status_code = report.http_status
        if probe == "report" and not detailed:
            status_code = 401
            headers["WWW-Authenticate"] = 'Bearer realm="health"'
        return HealthHTTPResponse(
            status_code=status_code, headers=headers, body=report.to_json(detailed=detailed)
        )

    # -- running checks -------------------------------------------------------------

    def run_checks(self) -> list[CheckResult]:
        """The current result of every registered check, in registration order."""
        settings = self._active_settings()
        cache_seconds = (
            self._cache_seconds
            if self._cache_seconds is not None
            else settings.health_cache_seconds
        )
        default_timeout = self._check_timeout or settings.health_check_timeout
        probe_started = time.monotonic()
        deadline_at = probe_started + (self._deadline or settings.health_deadline)

        pending: list[tuple[HealthCheck, _Slot, Future[CheckResult], float, float]] = []
        results: dict[HealthCheck, CheckResult] = {}
        checks = list(self.registry)
        for check in checks:
            slot = self._slot(check)
            timeout = check.timeout or default_timeout
            with slot.lock:
                if slot.result is not None and probe_started - slot.result_at < cache_seconds:
                    results[check] = slot.result
                    continue
                if slot.running is None:
                    slot.running = Future()
                    slot.started_at = time.monotonic()
                    self._start(check, slot, slot.running, timeout)
                pending.append((check, slot, slot.running, slot.started_at, timeout))

        for check, slot, future, started_at, timeout in pending:
            check_deadline = started_at + timeout
            wait_until = min(check_deadline, deadline_at)
            try:
                results[check] = future.result(timeout=max(0.0, wait_until - time.monotonic()))
            except FutureTimeout:
                if wait_until < check_deadline:
                    waited = _seconds(deadline_at - probe_started)
                    output = f"timed out: the probe deadline passed after {waited}"
                    results[check] = self._result(check, "fail", started_at, output=output)
                    continue
                result = self._result(
                    check, "fail", started_at, output=f"timed out after {_seconds(timeout)}"
                )
                with slot.lock:
                    # Remembered like any failure, so later probes answer at once while
                    # the run is still stuck (it replaces this result when it ends).
                    if slot.running is future:
                        slot.result, slot.result_at = result, time.monotonic()
                results[check] = result
        return [results[check] for check in checks if check in results]

    def _start(
        self, check: HealthCheck, slot: _Slot, future: Future[CheckResult], timeout: float
    ) -> None:
        """Start a run; called with the slot's lock held."""
        thread = threading.Thread(
            target=self._execute,
            args=(check, slot, future, timeout),
            name=f"backend_kit-health-{check.key}",
            daemon=True,  # a check stuck in a call without timeout must not block exit
        )
        try:
            thread.start()
        except RuntimeError as exc:  # out of threads: fail this run, let the next try again
            result = self._result(check, "fail", time.monotonic(), output=f"not started: {exc}")
            slot.result, slot.result_at, slot.running = result, time.monotonic(), None
            future.set_result(result)

    def _execute(
        self, check: HealthCheck, slot: _Slot, future: Future[CheckResult], timeout: float
    ) -> None:
        started_at = time.monotonic()
        try:
            value: Any = check.run()
            if inspect.isawaitable(value):
                value = asyncio.run(asyncio.wait_for(value, timeout))
            elapsed = time.monotonic() - started_at
            if elapsed > timeout:
                result = self._result(
                    check,
                    "fail",
                    started_at,
                    output=f"timed out after {_seconds(timeout)} (finished in {_seconds(elapsed)})",
                )
            else:
                result = self._result(check, "pass", started_at, observation=_observation(value))
        except (TimeoutError, asyncio.TimeoutError):
            result = self._result(
                check, "fail", started_at, output=f"timed out after {_seconds(timeout)}"
            )
        except Exception as exc:
            message = str(exc).strip()
            output = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
            result = self._result(check, "fail", started_at, output=output)
        except BaseException as exc:  # keep the slot usable, then let it propagate
            result = self._result(check, "fail", started_at, output=type(exc).__name__)
            self._finish(slot, future, result)
            raise
        self._finish(slot, future, result)

    @staticmethod
    def _finish(slot: _Slot, future: Future[CheckResult], result: CheckResult) -> None:
        with slot.lock:
            slot.result, slot.result_at = result, time.monotonic()
            slot.running = None
        future.set_result(result)

    def _result(
        self,
        check: HealthCheck,
        status: CheckStatus,
        started_at: float,
        *,
        observation: Observation | None = None,
        output: str | None = None,
    ) -> CheckResult:
        if output is not None:
            output = self._redact(output)[:_MAX_OUTPUT]
        return CheckResult(
            check=check,
            status=status,
            time=_now_iso(),
            duration=time.monotonic() - started_at,
            observation=observation,
            output=output,
        )

    # -- helpers --------------------------------------------------------------------

    def _slot(self, check: HealthCheck) -> _Slot:
        slot = self._slots.get(check)
        if slot is None:
            with self._slots_lock:
                slot = self._slots.setdefault(check, _Slot())
        return slot

    def _active_settings(self) -> Settings:
        if self._settings is not None:
            return self._settings
        from backend_kit._settings import get_settings

        return get_settings()

    def _redact(self, text: str) -> str:
        if self._settings is None:
            return get_redactor().redact_text(text)
        if self._redactor is None:
            self._redactor = Redactor.from_settings(self._settings)
        return self._redactor.redact_text(text)

    def _report(
        self,
        probe: str,
        status: CheckStatus,
        *,
        checks: tuple[CheckResult, ...] = (),
        output: str | None = None,
    ) -> HealthReport:
        settings = self._active_settings()
        return HealthReport(
            status=status,
            probe=probe,
            checks=checks,
            service_id=settings.service_name,
            release_id=settings.release,
            output=output,
        )


def _open_circuit_results() -> list[CheckResult]:
    """One ``warn`` per circuit breaker of this process that is open or half-open: the
    service still answers, but one of its dependencies is being cut off."""
    from backend_kit._breaker import open_circuits

    results: list[CheckResult] = []
    for breaker in open_circuits():
        check = HealthCheck(
            _health_name(breaker.name),
            run=_noop,
            component_type="http" if breaker.name.startswith("http:") else "custom",
            critical=False,
            measurement="circuit",
        )
        results.append(
            CheckResult(
                check=check,
                status="warn",
                time=_now_iso(),
                duration=0.0,
                output=f"circuit {breaker.state}: calls fail fast until a probe succeeds",
            )
        )
    return results


def _health_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name)
    return cleaned or "circuit"


def _noop() -> None:
    return None
