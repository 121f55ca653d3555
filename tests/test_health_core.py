"""Checks, registry and the runner: parallelism, timeouts, sharing, caching, lifecycle."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

import pytest

from backend_kit import Settings, load_settings
from backend_kit.health import (
    HealthCheck,
    HealthRegistry,
    HealthRunner,
    Observation,
    callable_check,
    install_sigterm_handler,
    is_draining,
    mark_started,
    mark_starting,
    start_draining,
)
from backend_kit.health._lifecycle import reset_lifecycle
from backend_kit.health._runner import SETTLE_SECONDS
from tests.health_support import Spy, assert_report_valid


def health_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("backend_kit-health-"))


# -- checks and registry ------------------------------------------------------------


def test_check_defaults_and_key() -> None:
    check = HealthCheck("payments", run=lambda: None)
    assert (check.critical, check.component_type, check.timeout, check.key) == (
        True,
        "custom",
        None,
        "payments:status",
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "a:b"}, "name 'a:b' is invalid"),
        ({"name": "has space"}, "is invalid"),
        ({"name": "x", "component_type": "database"}, "component_type 'database' is not one of"),
        ({"name": "x", "timeout": 0}, "timeout must be a positive number"),
    ],
)
def test_invalid_check_is_refused_with_a_clear_message(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        HealthCheck(run=lambda: None, **options)  # type: ignore[arg-type]


def test_registry_decorator_and_duplicate_keys() -> None:
    registry = HealthRegistry()

    @registry.check
    def queue() -> None:
        pass

    @registry.check(name="search", component_type="http", critical=False, timeout=0.5)
    async def search_ping() -> Observation:
        return Observation(3, "ms")

    assert [c.key for c in registry] == ["queue:status", "search:status"]
    assert queue() is None  # the function comes back unchanged
    with pytest.raises(ValueError, match="already registered"):
        registry.add(callable_check(lambda: None, name="queue"))
    registry.remove("queue:status")
    assert len(registry) == 1


def test_returned_values_become_observations() -> None:
    registry = HealthRegistry(
        [
            HealthCheck("plain", run=lambda: None),
            HealthCheck("bare", run=lambda: 7),
            HealthCheck("pair", run=lambda: (12.5, "ms")),
            HealthCheck("obs", run=lambda: Observation(0.5, "percent")),
        ]
    )
    report = HealthRunner(registry, cache_seconds=0).ready()
    observed = {r.key: r.observation for r in report.checks}
    assert observed == {
        "plain:status": None,
        "bare:status": Observation(7),
        "pair:status": Observation(12.5, "ms"),
        "obs:status": Observation(0.5, "percent"),
    }
    assert_report_valid(report)


def test_async_check_runs_and_is_cancelled_at_its_timeout() -> None:
    cancelled = threading.Event()

    async def fast() -> tuple[int, str]:
        await asyncio.sleep(0)
        return (1, "ms")

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    registry = HealthRegistry(
        [HealthCheck("fast", run=fast), HealthCheck("slow", run=slow, timeout=0.3)]
    )
    report = HealthRunner(registry, cache_seconds=0).ready()
    by_key = {r.key: r for r in report.checks}
    assert by_key["fast:status"].status == "pass"
    assert by_key["slow:status"].status == "fail"
    assert by_key["slow:status"].output == "timed out after 0.3 s"
    assert cancelled.wait(5), "the async check was not cancelled at its timeout"


# -- readiness semantics ------------------------------------------------------------


def test_critical_failure_fails_and_non_critical_failure_warns() -> None:
    ok, broken_optional = Spy(), Spy(fail="search is down")
    registry = HealthRegistry([ok.check("db"), broken_optional.check("search", critical=False)])
    runner = HealthRunner(registry, cache_seconds=0)
    report = runner.ready()
    assert (report.status, report.http_status) == ("warn", 200)
    assert [r.status for r in report.checks] == ["pass", "fail"]
    assert report.checks[1].output == "RuntimeError: search is down"

    registry.add(Spy(fail="db is down").check("primary"))
    report = runner.ready()
    assert (report.status, report.http_status) == ("fail", 503)
    assert_report_valid(report)


def test_three_hung_critical_checks_fail_within_the_max_timeout_not_the_sum() -> None:
    spies = [Spy(hang=True) for _ in range(3)]
    registry = HealthRegistry([s.check(f"hung{i}", timeout=1.0) for i, s in enumerate(spies)])
    runner = HealthRunner(registry, cache_seconds=0, deadline=10)
    try:
        started = time.monotonic()
        report = runner.ready()
        elapsed = time.monotonic() - started
        assert report.status == "fail"
        assert report.http_status == 503
        assert [r.output for r in report.checks] == ["timed out after 1 s"] * 3
        # Parallel: about 1 s; the sum would be 3 s.
        assert 0.9 <= elapsed < 2.2
        # The next probe (the cache interval is 0) abandons the stuck runs and starts
        # fresh ones; at two stuck runs per check, probes answer at once and start none.
        assert runner.ready().status == "fail"
        assert [s.calls for s in spies] == [2, 2, 2]
        started = time.monotonic()
        report = runner.ready()
        assert time.monotonic() - started < 0.5
        assert report.status == "fail"
        for result in report.checks:
            assert result.output is not None
            assert result.output.startswith("hung for ")
            assert result.output.endswith("2 runs still stuck, no new run until one ends")
        assert [s.calls for s in spies] == [2, 2, 2]
    finally:
        for spy in spies:
            spy.release.set()


def test_probe_deadline_bounds_checks_with_long_timeouts() -> None:
    spy = Spy(hang=True)
    runner = HealthRunner(HealthRegistry([spy.check("slow", timeout=30)]), deadline=0.5)
    try:
        started = time.monotonic()
        report = runner.ready()
        assert time.monotonic() - started < 1.5
        assert report.status == "fail"
        assert report.checks[0].output is not None
        assert report.checks[0].output.startswith("timed out: the probe deadline passed")
    finally:
        spy.release.set()


def test_a_check_that_finishes_late_is_a_failure() -> None:
    spy = Spy(delay=0.4)
    runner = HealthRunner(HealthRegistry([spy.check("late", timeout=0.2)]), cache_seconds=0)
    assert runner.ready().status == "fail"
    deadline = time.monotonic() + 5
    while health_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    report = runner.ready()  # the next run is late as well, and reported so
    assert report.checks[0].output == "timed out after 0.2 s"


def test_results_are_cached_failures_included() -> None:
    good, bad = Spy(), Spy(fail="boom")
    runner = HealthRunner(HealthRegistry([good.check("good"), bad.check("bad")]), cache_seconds=60)
    for _ in range(20):
        runner.ready()
    assert (good.calls, bad.calls) == (1, 1)


def test_cache_expires_after_the_interval() -> None:
    spy = Spy()
    runner = HealthRunner(HealthRegistry([spy.check("db")]), cache_seconds=0.2)
    runner.ready()
    runner.ready()
    assert spy.calls == 1
    time.sleep(0.3)
    runner.ready()
    assert spy.calls == 2


def test_concurrent_probes_share_one_run_in_flight() -> None:
    spy = Spy(delay=0.3)
    runner = HealthRunner(HealthRegistry([spy.check("db", timeout=5)]), cache_seconds=0)
    with ThreadPoolExecutor(max_workers=20) as pool:
        reports = list(pool.map(lambda _: runner.ready(), range(20)))
    assert {r.status for r in reports} == {"pass"}
    assert spy.calls == 1


def test_probe_storm_runs_each_check_at_most_once_per_interval() -> None:
    """200 probes from 50 concurrent clients: one real run per check per interval (+1)."""
    interval = 0.5
    spies = [Spy(delay=0.01), Spy(delay=0.02, fail="down"), Spy(delay=0.01)]
    registry = HealthRegistry([s.check(f"dep{i}", critical=i != 1) for i, s in enumerate(spies)])
    runner = HealthRunner(registry, cache_seconds=interval)
    barrier = threading.Barrier(50)

    def client(index: int) -> str:
        if index < 50:
            barrier.wait(timeout=10)
        time.sleep(0.005 * (index % 7))  # spread the probes over a few intervals
        return runner.ready().status

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(client, range(200)))
    elapsed = time.monotonic() - started
    assert elapsed < 10
    assert set(statuses) == {"warn"}
    allowed = int(elapsed / interval) + 2  # the interval count rounded up, plus one
    for spy in spies:
        assert 1 <= spy.calls <= allowed, (spy.calls, elapsed)


def test_thread_count_stays_bounded_by_the_number_of_checks_after_1000_probes() -> None:
    hung = [Spy(hang=True) for _ in range(2)]
    fast = Spy()
    registry = HealthRegistry(
        [*(s.check(f"hung{i}", timeout=0.2) for i, s in enumerate(hung)), fast.check("fast")]
    )
    runner = HealthRunner(registry, cache_seconds=0)
    threads_before = health_threads()  # earlier tests' released checks may be finishing
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, health_threads())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = list(pool.map(lambda _: runner.ready().status, range(1000)))
    finally:
        stop.set()
        sampler.join()
        for spy in hung:
            spy.release.set()
    assert set(statuses) == {"fail"}
    max_stuck = Settings.model_fields["health_max_stuck_runs"].default
    assert peak <= threads_before + len(hung) * max_stuck + 1
    # Each hung check was started again only until the bound on stuck runs was reached.
    assert [s.calls for s in hung] == [max_stuck] * len(hung)


def test_liveness_runs_no_check() -> None:
    spy = Spy(hang=True)
    runner = HealthRunner(HealthRegistry([spy.check("db")]))
    # Threads of earlier tests' released checks may still be finishing: count new ones.
    threads_before = health_threads()
    try:
        started = time.monotonic()
        for _ in range(100):
            report = runner.live()
            assert (report.status, report.http_status, report.checks) == ("pass", 200, ())
        assert time.monotonic() - started < 1
        assert spy.calls == 0
        assert health_threads() <= threads_before
    finally:
        spy.release.set()


# -- lifecycle ------------------------------------------------------------------------


def test_draining_fails_readiness_at_once_while_liveness_passes() -> None:
    spy = Spy()
    runner = HealthRunner(HealthRegistry([spy.check("db")]), cache_seconds=0)
    assert runner.ready().status == "pass"
    start_draining()
    report = runner.ready()
    assert (report.status, report.http_status) == ("fail", 503)
    assert report.output == "draining: shutting down"
    assert report.to_dict(detailed=False) == {"status": "fail"}
    assert runner.live().status == "pass"
    assert spy.calls == 1  # no check ran while draining
    assert_report_valid(report)


def test_startup_state() -> None:
    runner = HealthRunner(HealthRegistry([Spy().check("db")]))
    mark_starting()
    assert runner.startup().status == "fail"
    assert runner.ready().status == "fail"
    assert runner.live().status == "pass"
    mark_started()
    assert runner.startup().status == "pass"
    assert runner.ready().status == "pass"


def test_sigterm_starts_draining_and_chains_the_previous_handler() -> None:
    received: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    original = signal.signal(signal.SIGTERM, previous)
    try:
        assert install_sigterm_handler() is True
        assert install_sigterm_handler() is True  # once only
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert is_draining()
        assert received == [signal.SIGTERM]  # chained exactly once
        reset_lifecycle()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, original)


def test_sigterm_with_default_handler_exits_after_the_grace_period() -> None:
    script = textwrap.dedent(
        """
        import os, signal, sys, time
        from backend_kit.health import HealthRunner, install_sigterm_handler
        install_sigterm_handler(grace_seconds=0.5)
        runner = HealthRunner()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        print(runner.ready().status, runner.live().status, flush=True)
        time.sleep(30)
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=20, check=False
    )
    elapsed = time.monotonic() - started
    assert result.stdout.split() == ["fail", "pass"]
    assert result.returncode == -signal.SIGTERM
    assert elapsed < 15


def test_sigterm_handler_is_not_installed_outside_the_main_thread() -> None:
    outcome: list[bool] = []
    thread = threading.Thread(target=lambda: outcome.append(install_sigterm_handler()))
    thread.start()
    thread.join()
    assert outcome == [False]


class HangsOnce:
    """Hangs on its first call (until released), healthy on every later one."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1:
            self.release.wait(30)


def test_a_check_that_hung_once_recovers_after_one_cache_interval() -> None:
    body = HangsOnce()
    runner = HealthRunner(
        HealthRegistry([HealthCheck("flaky", run=body, timeout=0.3)]), cache_seconds=2.0
    )
    try:
        first = runner.ready()
        assert (first.status, first.checks[0].output) == ("fail", "timed out after 0.3 s")
        assert runner.ready().status == "fail"  # cached during the interval, no new run
        assert body.calls == 1
        time.sleep(2.1)
        # The stuck run is abandoned; the fresh one passes although the first still hangs.
        assert runner.ready().status == "pass"
        assert body.calls == 2
    finally:
        body.release.set()


def test_readiness_is_back_within_one_cache_interval_after_recovery() -> None:
    healthy = threading.Event()

    def dependency() -> None:
        if not healthy.is_set():
            raise RuntimeError("down")

    runner = HealthRunner(HealthRegistry([HealthCheck("dep", run=dependency)]), cache_seconds=1.0)
    assert runner.ready().status == "fail"
    healthy.set()
    recovered_at = time.monotonic()
    deadline = recovered_at + 5
    while runner.ready().status != "pass" and time.monotonic() < deadline:
        time.sleep(0.01)
    # One interval (1 s) plus one quick run; the rest is slack for a busy machine.
    assert time.monotonic() - recovered_at < 1.0 + 1.0


def test_workers_sharing_a_directory_answer_alike_after_a_change(tmp_path: Path) -> None:
    """Two runners stand for two worker processes: once one has seen the change, the
    other answers the same, although its own result is still within the interval."""
    healthy = threading.Event()
    healthy.set()

    def dependency() -> None:
        if not healthy.is_set():
            raise RuntimeError("down")

    settings = load_settings(health_shared_dir=tmp_path / "health", health_cache_seconds=60)
    worker_a = HealthRunner(HealthRegistry([HealthCheck("dep", run=dependency)]), settings=settings)
    worker_b = HealthRunner(HealthRegistry([HealthCheck("dep", run=dependency)]), settings=settings)
    assert worker_a.ready().status == worker_b.ready().status == "pass"
    healthy.clear()
    # Only a runner whose cache has expired notices; force one by a zero interval.
    noticing = HealthRunner(
        HealthRegistry([HealthCheck("dep", run=dependency)]), settings=settings, cache_seconds=0
    )
    assert noticing.ready().status == "fail"
    statuses = [runner.ready().status for _ in range(20) for runner in (worker_a, worker_b)]
    assert set(statuses) == {"fail"}
    report = worker_b.ready()
    assert report.checks[0].output == "RuntimeError: down"


def test_async_check_keeps_its_redis_client_across_runs(redis_url: str) -> None:
    redis_asyncio = pytest.importorskip("redis.asyncio")
    client = redis_asyncio.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    loops: set[int] = set()

    async def redis_ping() -> None:
        loops.add(id(asyncio.get_running_loop()))
        assert await client.ping()

    runner = HealthRunner(HealthRegistry([HealthCheck("redis", run=redis_ping)]), cache_seconds=0)
    try:
        statuses = [runner.ready().checks[0] for _ in range(5)]
    finally:
        # Closed on the loop that owns it, through the runner as well.
        HealthRunner(HealthRegistry([HealthCheck("close", run=client.aclose)])).ready()
    assert [r.status for r in statuses] == ["pass"] * 5, [r.output for r in statuses]
    assert len(loops) == 1  # one long-lived loop, so the client's connection is reused


def test_a_slow_run_that_ends_late_does_not_bring_back_an_older_state(tmp_path: Path) -> None:
    """Worker A starts a run that fails slowly; worker B starts later and passes first.
    A's failure looked at the dependency earlier, so neither worker answers with it."""
    settings = load_settings(health_shared_dir=tmp_path / "health", health_cache_seconds=60)

    def slow_failure() -> None:
        time.sleep(0.5)
        raise RuntimeError("down a moment ago")

    worker_a = HealthRunner(
        HealthRegistry([HealthCheck("dep", run=slow_failure)]), settings=settings
    )
    worker_b = HealthRunner(
        HealthRegistry([HealthCheck("dep", run=lambda: None)]), settings=settings
    )
    answers: list[str] = []
    first = threading.Thread(target=lambda: answers.append(worker_a.ready().status))
    first.start()
    time.sleep(0.1)
    assert worker_b.ready().status == "pass"
    first.join(timeout=10)
    # Even the probe that waited for the slow run answers with the newer observation.
    assert answers == ["pass"]
    statuses = [runner.ready().status for _ in range(10) for runner in (worker_a, worker_b)]
    assert set(statuses) == {"pass"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_a_forked_child_forgets_the_parents_stuck_runs() -> None:
    """The parent's stuck runs live in threads the child does not have; the child must
    not count them, or it would report the check hung for ever."""
    hung = threading.Event()
    calls = {"parent": 0}

    def check() -> None:
        if os.getpid() == parent_pid:
            calls["parent"] += 1
            hung.wait(30)  # stuck in the parent

    parent_pid = os.getpid()
    runner = HealthRunner(
        HealthRegistry([HealthCheck("dep", run=check, timeout=0.2)]), cache_seconds=0
    )
    try:
        for _ in range(3):  # two stuck runs: the bound is reached in the parent
            runner.ready()
        assert runner.ready().checks[0].output.startswith("hung for ")  # type: ignore[union-attr]
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                os.write(write_end, runner.ready().status.encode())
            finally:
                os._exit(0)
        os.close(write_end)
        _, status = os.waitpid(child, 0)
        assert os.read(read_end, 16) == b"pass"
        os.close(read_end)
        assert status == 0
    finally:
        hung.set()


def test_a_shared_directory_others_may_write_to_is_not_trusted(tmp_path: Path) -> None:
    shared = tmp_path / "health"
    shared.mkdir()
    shared.chmod(0o777)
    (shared / "dep__status.json").write_bytes(
        b'{"at": 9e12, "status": "pass", "time": "t", "duration": 0, "output": null}'
    )
    settings = load_settings(health_shared_dir=shared, health_cache_seconds=60)

    def down() -> None:
        raise RuntimeError("down")

    runner = HealthRunner(HealthRegistry([HealthCheck("dep", run=down)]), settings=settings)
    assert runner.ready().status == "fail"  # the planted "pass" is not believed


def test_with_shared_results_a_change_is_not_reversed_within_a_second(tmp_path: Path) -> None:
    """Workers may disagree for a moment after a recovery (one of them still sees the
    fault): the first change is taken at once, a reversal only after the settle time."""
    healthy = threading.Event()

    def dependency() -> None:
        if not healthy.is_set():
            raise RuntimeError("down")

    settings = load_settings(health_shared_dir=tmp_path / "health", health_cache_seconds=0)
    runner = HealthRunner(HealthRegistry([HealthCheck("dep", run=dependency)]), settings=settings)
    healthy.set()
    assert runner.ready().status == "pass"  # the first status
    healthy.clear()
    changed_at = time.monotonic()  # no later than the failing run looks
    assert runner.ready().status == "fail"  # a change: at once
    healthy.set()
    statuses = []
    while time.monotonic() - changed_at < SETTLE_SECONDS * 0.5:
        statuses.append(runner.ready().status)  # a reversal within the second: held
    assert statuses
    assert set(statuses) == {"fail"}
    time.sleep(SETTLE_SECONDS * 0.6)
    assert runner.ready().status == "pass"  # after it: taken
