"""Both example apps under gunicorn and steady load while a proxy cuts and hangs their
dependency: the cache's Redis (Flask) and PostgreSQL (Django). Sentry points at an
endpoint that never answers throughout.

Each scenario runs once (about 15 s and 20 s of phases); the tests read its record.
The timing bounds derive from the timeouts the scenarios configure (see harness.py and
docs/reliability.md), with margins for a busy 2-core machine.
"""

from __future__ import annotations

import pytest

from tests.faults import harness
from tests.faults.harness import PhaseResult, ScenarioResult

# /readyz turns within this long of a change (the 1 s and 2 s).
FAULT_DETECTED_WITHIN = 1.0
RECOVERY_SEEN_WITHIN = 2.0
# The longest one request may take while the database is cut or hung: the read timeout
# (a reused connection's health check) plus the connect timeout, plus scheduling slack.
DATABASE_REQUEST_BOUND = harness.READ_TIMEOUT + harness.CONNECT_TIMEOUT + 1.5


@pytest.fixture(scope="module")
def cache_run(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    return harness.cache_scenario(tmp_path_factory.mktemp("cache-faults"))


@pytest.fixture(scope="module")
def database_run(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> ScenarioResult:
    pytest.importorskip("psycopg")
    return harness.database_scenario(tmp_path_factory.mktemp("database-faults"))


@pytest.fixture(scope="module")
def sqlite_run(tmp_path_factory: pytest.TempPathFactory) -> ScenarioResult:
    return harness.sqlite_scenario(tmp_path_factory.mktemp("sqlite-faults"))


def _assert_readiness_follows(phase: PhaseResult, expected: int, within: float) -> None:
    """The first answer of *expected* comes within *within* seconds, and once it came,
    every later probe of the phase answers the same (no flapping between workers)."""
    assert phase.probes, f"no readiness probe answered during {phase.name}"
    first = phase.first_probe(expected)
    assert first is not None, f"{phase.name}: /readyz never answered {expected}: {phase.probes}"
    assert first <= within, f"{phase.name}: /readyz answered {expected} only after {first:.2f} s"
    after = [status for at, status in phase.probes if at - phase.started >= first]
    assert set(after) == {expected}, f"{phase.name}: readiness flapped: {after}"


def _assert_logs_complete_and_separate(run: ScenarioResult) -> None:
    """One request_finished line per request, carrying that request's own id and path;
    every answer echoes its own id. Nothing lost, nothing leaked between requests."""
    by_id = {sample.request_id: sample for sample in run.samples}
    finished = [
        line
        for line in run.log_lines
        if line.get("event") == "request_finished" and line.get("request_id") in by_id
    ]
    assert len(finished) == len(run.samples)
    assert {line["request_id"] for line in finished} == set(by_id)
    for line in finished:
        sample = by_id[line["request_id"]]
        assert line["path"] == sample.path.split("?", 1)[0]
        assert line["status"] == sample.status
    assert all(s.echoed_id == s.request_id for s in run.samples if s.status)
    # Every line logged while serving a load request names a request of the load, a
    # probe, or the set-up request; none is left without one or with a stranger's.
    request_ids = {line.get("request_id") for line in run.log_lines} - {None}
    strangers = {
        rid for rid in request_ids if rid not in by_id and not str(rid).startswith("probe-")
    }
    assert len(strangers) <= 1, strangers  # the product created before the load


def _started_in(phase: PhaseResult, run: ScenarioResult) -> list[harness.Sample]:
    return [s for s in run.samples if phase.started <= s.started < phase.ended]


# -- the cache ---------------------------------------------------------------------------


def test_no_request_fails_whatever_happens_to_the_cache(cache_run: ScenarioResult) -> None:
    for phase in cache_run.phases:
        assert phase.samples, f"no request finished during {phase.name}"
        assert phase.errors == [], f"{phase.name}: {len(phase.errors)} failed requests"
    assert all(s.status == 200 for s in cache_run.samples)


def test_cache_faults_turn_readiness_at_once_and_back_without_flapping(
    cache_run: ScenarioResult,
) -> None:
    for phase in cache_run.phases:
        if phase.name == "before":
            assert {status for _, status in phase.probes} == {200}
        elif phase.mode == "pass":
            _assert_readiness_follows(phase, 200, RECOVERY_SEEN_WITHIN)
        else:
            _assert_readiness_follows(phase, 503, FAULT_DETECTED_WITHIN)


def test_cache_run_loses_no_log_line_and_leaks_no_context(cache_run: ScenarioResult) -> None:
    _assert_logs_complete_and_separate(cache_run)


# -- the database ------------------------------------------------------------------------


def test_database_faults_fail_requests_within_the_documented_timeouts(
    database_run: ScenarioResult,
) -> None:
    before = database_run.phase("before")
    assert before.samples
    assert before.errors == []
    for phase in database_run.phases:
        slowest = max((s.latency for s in phase.samples), default=0.0)
        assert slowest <= DATABASE_REQUEST_BOUND, f"{phase.name}: a request took {slowest:.2f} s"
    for name in ("cut", "hang"):
        phase = database_run.phase(name)
        # While the database is away every request fails (one that began before, or
        # ended after, may have been lucky), and is answered: never dropped.
        inside = [s for s in _started_in(phase, database_run) if s in phase.samples]
        assert inside, f"no request started and ended during {name}"
        assert {s.status for s in inside} == {500}
        assert {s.status for s in phase.errors} == {500}


def test_requests_started_after_the_database_returns_all_succeed(
    database_run: ScenarioResult,
) -> None:
    for name in ("after cut", "after hang"):
        phase = database_run.phase(name)
        # Begun after the database returned, and over before the next fault began.
        started_after = [s for s in _started_in(phase, database_run) if s in phase.samples]
        assert started_after, f"no request started during {name}"
        failed = [s for s in started_after if s.status != 200]
        assert failed == [], f"{name}: {len(failed)} of {len(started_after)} failed"


def test_database_faults_turn_readiness_at_once_and_back_without_flapping(
    database_run: ScenarioResult,
) -> None:
    for phase in database_run.phases:
        if phase.name == "before":
            assert {status for _, status in phase.probes} == {200}
        elif phase.mode == "pass":
            _assert_readiness_follows(phase, 200, RECOVERY_SEEN_WITHIN)
        else:
            _assert_readiness_follows(phase, 503, FAULT_DETECTED_WITHIN)


def test_database_run_loses_no_log_line_and_leaks_no_context(
    database_run: ScenarioResult,
) -> None:
    _assert_logs_complete_and_separate(database_run)


def test_an_unanswering_sentry_is_reported_not_silent(database_run: ScenarioResult) -> None:
    # Every 500 is an error event for Sentry, which never answers: the drops are warned
    # about in the app log (once per interval per worker, so at most a few lines).
    warnings = [
        line for line in database_run.log_lines if line.get("event") == "sentry_events_dropped"
    ]
    assert 1 <= len(warnings) <= 2 * 2  # two workers; the first drop and the shutdown report
    assert all(line["level"] == "warning" for line in warnings)


# -- SQLite locked by another process ---------------------------------------------------


def test_a_locked_sqlite_database_fails_requests_after_the_statement_timeout(
    sqlite_run: ScenarioResult,
) -> None:
    before, locked, after = (sqlite_run.phase(n) for n in ("before", "locked", "after lock"))
    assert before.samples
    assert before.errors == []
    inside = [s for s in _started_in(locked, sqlite_run) if s in locked.samples]
    assert inside, "no request started and ended while the database was locked"
    assert {s.status for s in inside} == {500}
    for sample in inside:  # each waited for the lock about the statement timeout, no more
        assert harness.STATEMENT_TIMEOUT * 0.9 <= sample.latency <= harness.STATEMENT_TIMEOUT + 2.0
    started_after = [s for s in _started_in(after, sqlite_run) if s in after.samples]
    assert started_after
    assert {s.status for s in started_after} == {200}
    _assert_readiness_follows(locked, 503, FAULT_DETECTED_WITHIN)
    _assert_readiness_follows(after, 200, RECOVERY_SEEN_WITHIN)
    _assert_logs_complete_and_separate(sqlite_run)


def test_the_figures_table_has_a_row_per_phase(
    cache_run: ScenarioResult, database_run: ScenarioResult, sqlite_run: ScenarioResult
) -> None:
    runs = [cache_run, database_run, sqlite_run]
    rows = harness.table(runs).splitlines()
    assert len(rows) == 2 + sum(len(run.phases) for run in runs)
