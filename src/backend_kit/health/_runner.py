"""Running probes: checks in parallel, bounded, shared and cached.

Every check has a slot holding its last result and, while it runs, the one run in
flight. A probe reuses a result younger than the cache interval, joins a run in flight,
or starts one in a daemon thread; it then waits for each run no longer than that run's
own timeout (counted from when the run started) and the probe's overall deadline. A run
stuck past its timeout is abandoned by the first probe after the cache interval, which
starts a fresh one; at most ``HEALTH_MAX_STUCK_RUNS`` abandoned runs per check may be
alive, so a hung dependency costs a bounded number of threads however many probes
arrive. With ``HEALTH_SHARED_DIR``, results are shared between the worker processes.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import tempfile
import threading
import time
import weakref
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from backend_kit import _metric_hooks
from backend_kit._active import get_redactor
from backend_kit._forksafe import after_fork_in_child, reset_in_child
from backend_kit._redact import Redactor
from backend_kit.context import start_thread

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
    __slots__ = (
        "lock",
        "result",
        "result_at",
        "result_wall",
        "run_timeout",
        "running",
        "started_at",
        "started_wall",
        "status_since",
        "stuck",
    )

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.result: CheckResult | None = None
        self.result_at = 0.0  # monotonic
        # When the dependency was looked at (the run's start, wall clock): what decides
        # which of two results, from this process or another, is the newer.
        self.result_wall = 0.0
        # When the current status began (wall clock); 0 while it is the first one seen.
        self.status_since = 0.0
        self.running: Future[CheckResult] | None = None
        self.started_at = 0.0
        self.started_wall = 0.0
        self.run_timeout = 0.0
        # Runs abandoned after their timeout that have not ended yet, with their start.
        self.stuck: list[tuple[Future[CheckResult], float]] = []


class _EventLoopThread:
    """One event loop in a daemon thread, for every async check of the process, so a
    check may keep an async client (bound to its loop) from one run to the next."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._run, name="backend_kit-health-loop", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()


_loop_lock = threading.Lock()
_loop_thread: _EventLoopThread | None = None


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop_thread
    with _loop_lock:
        if _loop_thread is None or not _loop_thread.thread.is_alive():
            _loop_thread = _EventLoopThread()
        return _loop_thread.loop


@after_fork_in_child
def reset_event_loop_after_fork() -> None:
    """Forget the async checks' loop thread in a forked child, where the thread does not
    exist; the next async check starts a new one."""
    global _loop_thread, _loop_lock
    _loop_lock = threading.Lock()
    _loop_thread = None


class _SharedResults:
    """The newest result of each check, in files that the worker processes of one
    service share (``HEALTH_SHARED_DIR``). Best effort: a file that cannot be read or
    written is ignored, and each process falls back on its own results."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._trusted: bool | None = None

    def _path(self, check: HealthCheck) -> Path:
        return self.directory / f"{check.key.replace(':', '__')}.json"

    def _usable(self) -> bool:
        """Created if missing; used only when it belongs to this user and nobody else
        may write to it, since what it holds decides readiness."""
        if self._trusted is None:
            try:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                info = self.directory.stat()
            except OSError:
                return False  # perhaps a moment's problem: try again next time
            getuid = getattr(os, "getuid", None)
            owned = getuid is None or info.st_uid == getuid()
            self._trusted = owned and not info.st_mode & 0o022
            if not self._trusted:
                from backend_kit._logging import get_logger

                get_logger("backend_kit.health").warning(
                    "health_shared_dir_ignored",
                    directory=str(self.directory),
                    reason="not owned by this user, or writable by others",
                )
        return self._trusted

    def read(self, check: HealthCheck) -> tuple[float, float, CheckResult] | None:
        """The newest shared result of *check*: (observed at, status since, result)."""
        if not self._usable():
            return None
        try:
            record = orjson.loads(self._path(check).read_bytes())
            observation = record.get("observation")
            result = CheckResult(
                check=check,
                status=record["status"],
                time=str(record["time"]),
                duration=float(record["duration"]),
                observation=Observation(*observation) if observation else None,
                output=record.get("output"),
            )
            return float(record["at"]), float(record.get("since", 0.0)), result
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, check: HealthCheck, at: float, since: float, result: CheckResult) -> None:
        current = self.read(check)
        if current is not None and current[0] > at:
            return  # another worker published a later observation meanwhile
        observation = result.observation
        record = {
            "at": at,
            "since": since,
            "status": result.status,
            "time": result.time,
            "duration": result.duration,
            "output": result.output,
            "observation": None
            if observation is None
            else [_json_value(observation.value), observation.unit],
        }
        if not self._usable():
            return
        try:
            fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".result-")
            with os.fdopen(fd, "wb") as file:
                file.write(orjson.dumps(record))
            # Atomic: a reader sees the old record or the new one, never half of one.
            os.replace(temporary, self._path(check))
        except OSError:
            pass


def _json_value(value: Any) -> Any:
    try:
        orjson.dumps(value)
    except TypeError:
        return str(value)
    return value


#: With shared results, a change of a check's status is not reversed within this many
#: seconds, so readiness does not flap while the workers' views of a dependency settle
#: after a fault or a recovery.
SETTLE_SECONDS = 1.0


def _adopt(slot: _Slot, newest: tuple[float, float, CheckResult]) -> None:
    """Take another worker's result when it looked at the dependency later than ours;
    called with the slot's lock held."""
    observed_at, since, result = newest
    if observed_at > slot.result_wall:
        slot.result, slot.result_wall, slot.status_since = result, observed_at, since
        slot.result_at = time.monotonic() - max(0.0, time.time() - observed_at)


def _run_on_loop(awaitable: Any, timeout: float) -> Any:
    """Run an async check's *awaitable* on the shared loop, cancelled at *timeout*."""

    async def bounded() -> Any:
        return await asyncio.wait_for(awaitable, timeout)

    running = asyncio.run_coroutine_threadsafe(bounded(), _event_loop())
    # A check that blocks the loop itself cannot be cancelled; do not wait for it longer.
    try:
        return running.result(timeout=timeout + 1.0)
    finally:
        running.cancel()


def forget_health_results() -> None:
    """Every runner of the process forgets its checks' last results (for tests)."""
    for runner in list(_runners):
        runner.forget_results()


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
        self._shared: _SharedResults | None = None
        reset_in_child(self)
        _runners.add(self)

    def forget_results(self) -> None:
        """Forget every check's last result, so the next probe runs each check again."""
        with self._slots_lock:
            self._slots = {}

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
        max_stuck = settings.health_max_stuck_runs
        shared = self._shared_results(settings)
        probe_started = time.monotonic()
        deadline_at = probe_started + (self._deadline or settings.health_deadline)

        pending: list[tuple[HealthCheck, _Slot, Future[CheckResult], float, float]] = []
        results: dict[HealthCheck, CheckResult] = {}
        checks = list(self.registry)
        for check in checks:
            slot = self._slot(check)
            timeout = check.timeout or default_timeout
            newest = shared.read(check) if shared is not None else None
            with slot.lock:
                now = time.monotonic()
                if newest is not None:
                    _adopt(slot, newest)
                if slot.result is not None and now - slot.result_at < cache_seconds:
                    results[check] = slot.result
                    continue
                if slot.running is not None and now >= slot.started_at + slot.run_timeout:
                    # Stuck past its timeout: leave it to end on its own, run afresh.
                    slot.stuck.append((slot.running, slot.started_at))
                    slot.running = None
                slot.stuck = [(run, at) for run, at in slot.stuck if not run.done()]
                if slot.running is None and len(slot.stuck) >= max_stuck:
                    hung_for = now - min(at for _, at in slot.stuck)
                    output = (
                        f"hung for {hung_for:.0f} s: {len(slot.stuck)} runs still stuck, "
                        "no new run until one ends"
                    )
                    result = self._result(check, "fail", now, output=output)
                    self._remember(check, slot, result, shared, time.time())
                    results[check] = result
                    continue
                if slot.running is None:
                    slot.running = Future()
                    slot.started_at, slot.run_timeout = time.monotonic(), timeout
                    slot.started_wall = time.time()
                    self._start(check, slot, slot.running, timeout, shared)
                pending.append((check, slot, slot.running, slot.started_at, slot.run_timeout))

        for check, slot, future, started_at, timeout in pending:
            check_deadline = started_at + timeout
            wait_until = min(check_deadline, deadline_at)
            try:
                own = future.result(timeout=max(0.0, wait_until - time.monotonic()))
                with slot.lock:
                    # What the slot keeps: this run's result, unless it was set aside
                    # (a reversal too soon after a change, or an older observation).
                    results[check] = slot.result or own
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
                    # the run is still stuck; the first probe after the cache interval
                    # abandons the run and starts a fresh one.
                    if slot.running is future:
                        self._remember(check, slot, result, shared, slot.started_wall)
                    results[check] = slot.result or result
        return [results[check] for check in checks if check in results]

    @staticmethod
    def _remember(
        check: HealthCheck,
        slot: _Slot,
        result: CheckResult,
        shared: _SharedResults | None,
        observed_at: float,
    ) -> None:
        """Keep *result*, which looked at the dependency at wall-clock *observed_at*, as
        the check's latest, unless
        - a result observed later is known already, here or from another worker (a slow
          run that ends after a quicker, newer one must not bring back an older state);
        - with results shared between workers, it reverses a change of status less
          than `SETTLE_SECONDS` old (workers that disagree for a moment after a fault
          or a recovery must not make readiness flap; a reversal that lasts is taken
          by a run after that second).
        Called with the slot's lock held."""
        if shared is not None:
            newest = shared.read(check)
            if newest is not None:
                _adopt(slot, newest)
        if observed_at < slot.result_wall:
            return
        previous = slot.result
        since = slot.status_since
        if previous is None:
            since = 0.0
        elif previous.status != result.status:
            if shared is not None and since and observed_at - since < SETTLE_SECONDS:
                return
            since = observed_at
        slot.result, slot.result_at, slot.result_wall = result, time.monotonic(), observed_at
        slot.status_since = since
        if shared is not None:
            shared.write(check, observed_at, since, result)

    def _shared_results(self, settings: Settings) -> _SharedResults | None:
        directory = settings.health_shared_dir
        if directory is None:
            return None
        current = self._shared
        if current is None or current.directory != directory:
            current = self._shared = _SharedResults(Path(directory))
        return current

    def _start(
        self,
        check: HealthCheck,
        slot: _Slot,
        future: Future[CheckResult],
        timeout: float,
        shared: _SharedResults | None,
    ) -> None:
        """Start a run; called with the slot's lock held."""
        try:
            # The check sees the probe's context (its request id in the check's logs).
            start_thread(
                self._execute,
                check,
                slot,
                future,
                timeout,
                shared,
                name=f"backend_kit-health-{check.key}",
                daemon=True,  # a check stuck in a call without timeout must not block exit
            )
        except RuntimeError as exc:  # out of threads: fail this run, let the next try again
            result = self._result(check, "fail", time.monotonic(), output=f"not started: {exc}")
            self._remember(check, slot, result, shared, time.time())
            slot.running = None
            future.set_result(result)

    def _execute(
        self,
        check: HealthCheck,
        slot: _Slot,
        future: Future[CheckResult],
        timeout: float,
        shared: _SharedResults | None,
    ) -> None:
        started_at = time.monotonic()
        try:
            value: Any = check.run()
            if inspect.isawaitable(value):
                value = _run_on_loop(value, timeout)
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
        except (TimeoutError, asyncio.TimeoutError, FutureTimeout):
            result = self._result(
                check, "fail", started_at, output=f"timed out after {_seconds(timeout)}"
            )
        except Exception as exc:
            message = str(exc).strip()
            output = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
            result = self._result(check, "fail", started_at, output=output)
        except BaseException as exc:  # keep the slot usable, then let it propagate
            result = self._result(check, "fail", started_at, output=type(exc).__name__)
            self._finish(check, slot, future, result, shared)
            raise
        self._finish(check, slot, future, result, shared)

    def _finish(
        self,
        check: HealthCheck,
        slot: _Slot,
        future: Future[CheckResult],
        result: CheckResult,
        shared: _SharedResults | None,
    ) -> None:
        recorder = _metric_hooks.recorder
        if recorder is not None:
            recorder.health_check(check.name, result.status, result.duration)
        with slot.lock:
            if slot.running is future:
                self._remember(check, slot, result, shared, slot.started_wall)
                slot.running = None
            else:  # abandoned: a newer run owns the slot; only free its place
                slot.stuck = [(run, at) for run, at in slot.stuck if run is not future]
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

    def _reset_after_fork(self) -> None:
        """In a forked child: forget the runs in flight and the stuck ones (their threads
        stayed in the parent and will never finish here) and every lock, keeping the
        results, so the child's first probe starts its own runs."""
        self._slots_lock = threading.Lock()
        for slot in list(self._slots.values()):
            slot.lock = threading.Lock()
            slot.running, slot.stuck = None, []

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
        from backend_kit._active import get_settings

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


_runners: weakref.WeakSet[HealthRunner] = weakref.WeakSet()


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
