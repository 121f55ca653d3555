"""Built-in checks against the real PostgreSQL and Redis, and against broken ones."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
import redis

from backend_kit import SecretURL, load_settings
from backend_kit.health import (
    CheckResult,
    HealthCheck,
    HealthRegistry,
    HealthRunner,
    cache_check,
    callable_check,
    checks_from_settings,
    disk_space_check,
    http_check,
    memory_check,
    postgres_check,
    redis_check,
    sqlite_check,
)
from tests.health_support import assert_report_valid, http_status_server
from tests.servers import free_port, redis_server, silent_tcp_server


def run_one(check: HealthCheck) -> CheckResult:
    report = HealthRunner(HealthRegistry([check]), cache_seconds=0, deadline=30).ready()
    assert_report_valid(report)
    return report.checks[0]


def timed(check: HealthCheck) -> tuple[CheckResult, float]:
    started = time.monotonic()
    result = run_one(check)
    return result, time.monotonic() - started


# -- PostgreSQL -----------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_passes_with_a_real_query(postgres_url: str) -> None:
    result = run_one(postgres_check(SecretURL(postgres_url), timeout=5))
    assert result.status == "pass", result.output
    assert result.key == "postgresql:responseTime"
    assert result.observation is not None
    assert result.observation.unit == "ms"
    assert result.observation.value > 0


@pytest.mark.postgres
def test_postgres_statement_timeout_bounds_a_slow_query(postgres_url: str) -> None:
    check = postgres_check(postgres_url, timeout=1.5, query="SELECT pg_sleep(5)")
    result, elapsed = timed(check)
    assert result.status == "fail"
    assert "statement timeout" in (result.output or "")
    assert elapsed < 3


@pytest.mark.postgres
def test_postgres_nothing_listening_fails_fast_without_leaking_the_password() -> None:
    url = f"postgresql://app:pg-s3cret-pw@127.0.0.1:{free_port()}/app"
    result, elapsed = timed(postgres_check(url, timeout=2))
    assert result.status == "fail"
    assert "OperationalError" in (result.output or "")
    assert "pg-s3cret-pw" not in (result.output or "")
    assert elapsed < 2.5


@pytest.mark.postgres
def test_postgres_silent_server_times_out_at_the_check_timeout() -> None:
    with silent_tcp_server() as port:
        check = postgres_check(f"postgresql://app:pw@127.0.0.1:{port}/app", timeout=0.8)
        result, elapsed = timed(check)
    assert result.status == "fail"
    assert result.output == "timed out after 0.8 s"
    assert elapsed < 1.8


def pg_health_connections(postgres_url: str) -> int:
    with psycopg.connect(postgres_url, connect_timeout=5, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'backend_kit-health'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def redis_health_connections(client: redis.Redis) -> int:
    return sum(1 for c in client.client_list() if c.get("name") == "backend_kit-health")


@pytest.mark.postgres
@pytest.mark.redis
def test_1000_probes_leave_connections_and_threads_bounded(
    postgres_url: str, redis_url: str
) -> None:
    registry = HealthRegistry(
        [postgres_check(postgres_url, timeout=5), redis_check(redis_url, timeout=5)]
    )
    # A deadline as generous as the checks' timeouts: this counts connections and
    # threads, and 20 concurrent probes on a loaded machine may take longer than 0.9 s.
    runner = HealthRunner(registry, cache_seconds=0.02, deadline=10)
    observer = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    # The servers are shared: count only what this test adds to what was open before.
    baseline = {
        "pg": pg_health_connections(postgres_url),
        "redis": redis_health_connections(observer),
    }
    peaks = {"threads": 0, "pg": 0, "redis": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            threads = sum(
                1 for t in threading.enumerate() if t.name.startswith("backend_kit-health-")
            )
            peaks["threads"] = max(peaks["threads"], threads)
            pg = pg_health_connections(postgres_url) - baseline["pg"]
            peaks["pg"] = max(peaks["pg"], pg)
            peaks["redis"] = max(
                peaks["redis"], redis_health_connections(observer) - baseline["redis"]
            )
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            statuses = list(pool.map(lambda _: runner.ready().status, range(1000)))
    finally:
        stop.set()
        sampler.join()
    assert set(statuses) == {"pass"}
    assert peaks["threads"] <= len(registry)
    assert peaks["pg"] <= 1
    assert peaks["redis"] <= 1
    # Every connection is closed once the probes are over.
    deadline = time.monotonic() + 5

    def still_open() -> tuple[int, int]:
        return (
            pg_health_connections(postgres_url) - baseline["pg"],
            redis_health_connections(observer) - baseline["redis"],
        )

    while max(still_open()) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert max(still_open()) <= 0
    observer.close()


# -- SQLite ----------------------------------------------------------------------------


def test_sqlite_passes_on_an_existing_file_and_fails_on_a_missing_one(tmp_path: Any) -> None:
    import sqlite3

    path = tmp_path / "app.sqlite3"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x)")
    connection.close()
    assert run_one(sqlite_check(path)).status == "pass"
    missing = tmp_path / "missing.sqlite3"
    result = run_one(sqlite_check(missing))
    assert result.status == "fail"
    assert "unable to open database file" in (result.output or "")
    assert not missing.exists()  # the check never creates the database
    assert run_one(sqlite_check(":memory:")).status == "pass"


def _sqlite_database(path: Any) -> None:
    import sqlite3

    connection = sqlite3.connect(path)
    with connection:
        connection.execute("CREATE TABLE products (sku TEXT PRIMARY KEY)")
    connection.close()


def test_sqlite_fails_while_another_process_holds_an_exclusive_lock(tmp_path: Any) -> None:
    path = tmp_path / "app.sqlite3"
    _sqlite_database(path)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        result, elapsed = timed(sqlite_check(path, timeout=0.5))
        assert result.status == "fail"
        assert result.output == "OperationalError: database is locked"
        assert elapsed < 5
    finally:
        holder.communicate(input="", timeout=10)
    assert run_one(sqlite_check(path, timeout=0.5)).status == "pass"  # lock released


def test_sqlite_fails_on_an_empty_file_left_where_the_database_was(tmp_path: Any) -> None:
    path = tmp_path / "app.sqlite3"
    _sqlite_database(path)
    assert run_one(sqlite_check(path)).status == "pass"
    path.rename(tmp_path / "moved.sqlite3")
    path.touch()
    result = run_one(sqlite_check(path))
    assert result.status == "fail"
    assert result.output == (
        "RuntimeError: the database app.sqlite3 has no tables: the file is empty or not "
        "the application's database (was it moved, or not migrated?)"
    )


def test_sqlite_fails_on_a_file_that_is_not_a_database(tmp_path: Any) -> None:
    path = tmp_path / "app.sqlite3"
    path.write_bytes(b"not a database at all, just some bytes" * 10)
    result = run_one(sqlite_check(path))
    assert result.status == "fail"
    assert result.output == "DatabaseError: file is not a database"


# -- Redis -------------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_ping_from_a_url_and_from_a_client(redis_url: str) -> None:
    result = run_one(redis_check(SecretURL(redis_url), timeout=2))
    assert (result.status, result.key) == ("pass", "redis:responseTime")
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        assert run_one(redis_check(client, name="sessions")).status == "pass"
    finally:
        client.close()


def test_redis_nothing_listening_fails_and_hides_the_password() -> None:
    url = f"redis://:redis-s3cret@127.0.0.1:{free_port()}/0"
    result, elapsed = timed(redis_check(url, timeout=1))
    assert result.status == "fail"
    assert "ConnectionError" in (result.output or "")
    assert "redis-s3cret" not in (result.output or "")
    assert elapsed < 1.5


def test_redis_silent_server_times_out() -> None:
    with silent_tcp_server() as port:
        result, elapsed = timed(redis_check(f"redis://127.0.0.1:{port}/0", timeout=0.5))
    assert result.status == "fail"
    assert "imeout" in (result.output or "") or "timed out" in (result.output or "")
    assert elapsed < 1.5


def test_redis_killed_mid_test_fails_then_recovers() -> None:
    with redis_server() as server:
        runner = HealthRunner(HealthRegistry([redis_check(server.url, timeout=1)]), cache_seconds=0)
        assert runner.ready().status == "pass"
        server.stop()
        started = time.monotonic()
        report = runner.ready()
        assert report.status == "fail"
        assert time.monotonic() - started < 1.5
        assert "Connection" in (report.checks[0].output or "")
        server.start()
        assert runner.ready().status == "pass"


# -- the backend_kit cache ------------------------------------------------------------------


class MemoryBackend:
    """A small in-memory backend with the get/set/delete protocol."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.lock = threading.Lock()

    def get(self, key: str) -> Any:
        with self.lock:
            return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        with self.lock:
            self.data[key] = value

    def delete(self, key: str) -> None:
        with self.lock:
            self.data.pop(key, None)


class ForgetfulBackend(MemoryBackend):
    """Swallows its errors and answers misses, as a cache whose server is down does."""

    def get(self, key: str) -> Any:
        return None


def test_cache_round_trip_on_an_in_memory_backend() -> None:
    backend = MemoryBackend()
    result = run_one(cache_check(backend))
    assert (result.status, result.key) == ("pass", "cache:responseTime")
    assert backend.data == {}  # the probe key is deleted
    failed = run_one(cache_check(ForgetfulBackend()))
    assert failed.status == "fail"
    assert "did not return the value just written" in (failed.output or "")


@pytest.mark.redis
def test_cache_round_trip_through_a_redis_py_client(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        assert run_one(cache_check(client)).status == "pass"
        assert list(client.scan_iter("backend_kit:health:*")) == []
    finally:
        client.close()


def test_cache_check_fails_when_its_redis_is_killed() -> None:
    with redis_server() as server:
        client = redis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        runner = HealthRunner(HealthRegistry([cache_check(client, timeout=2)]), cache_seconds=0)
        assert runner.ready().status == "pass"
        server.stop()
        report = runner.ready()
        assert report.status == "fail"
        assert "ConnectionError" in (report.checks[0].output or "")
        client.close()


# -- system ---------------------------------------------------------------------------------


def test_disk_space(tmp_path: Any) -> None:
    result = run_one(disk_space_check(tmp_path))
    assert result.status == "pass"
    assert result.observation is not None
    assert result.observation.unit == "bytes"
    assert result.observation.value > 0
    percent = run_one(disk_space_check(tmp_path, min_free_percent=0.0))
    assert percent.observation is not None
    assert percent.observation.unit == "%"
    too_demanding = run_one(disk_space_check(tmp_path, min_free_bytes=2**62))
    assert too_demanding.status == "fail"
    assert "below the minimum" in (too_demanding.output or "")
    with pytest.raises(ValueError, match="between 0 and 100"):
        disk_space_check(min_free_percent=120)


def test_process_memory() -> None:
    result = run_one(memory_check())
    assert (result.status, result.key) == ("pass", "memory:rss")
    assert result.observation is not None
    assert result.observation.value > 1024 * 1024
    assert run_one(memory_check(max_rss_bytes=1024)).status == "fail"


# -- HTTP and callables ----------------------------------------------------------------------


def test_http_expected_status() -> None:
    with http_status_server(204) as base:
        assert run_one(http_check(f"{base}/ping", expected_status=(200, 204))).status == "pass"
        result = run_one(http_check(f"{base}/ping", name="payments"))
        assert (result.status, result.key) == ("fail", "payments:responseTime")
        assert result.output == "RuntimeError: HTTP status 204, expected 200"
    with http_status_server(503) as base:
        assert run_one(http_check(base)).status == "fail"
        assert run_one(http_check(base, expected_status=503)).status == "pass"


def test_http_nothing_listening_and_silent_server() -> None:
    refused = run_one(http_check(f"http://127.0.0.1:{free_port()}/", timeout=1))
    assert refused.status == "fail"
    assert "URLError" in (refused.output or "")
    with silent_tcp_server() as port:
        result, elapsed = timed(http_check(f"http://127.0.0.1:{port}/", timeout=0.5))
    assert result.status == "fail"
    assert elapsed < 1.5


def test_http_check_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        http_check("file:///etc/passwd")


def test_callable_check_and_async_callable() -> None:
    async def ping() -> None:
        return None

    assert run_one(callable_check(ping)).key == "ping:status"
    assert run_one(callable_check(lambda: 1 / 0, name="divide")).output == (
        "ZeroDivisionError: division by zero"
    )


# -- checks implied by the settings ----------------------------------------------------------------


def test_settings_imply_database_and_cache_checks(tmp_path: Any) -> None:
    settings = load_settings(
        database_url="postgres://app:pw@db.internal:5432/app", cache_url="redis://cache:6379/1"
    )
    assert [c.key for c in checks_from_settings(settings)] == [
        "postgresql:responseTime",
        "cache:responseTime",  # through backend_kit's own Redis cache backend
    ]
    sqlite_path = tmp_path / "app.db"
    settings = load_settings(database_url=f"sqlite:///{sqlite_path}")
    registry = checks_from_settings(settings)
    assert [c.key for c in registry] == ["sqlite:responseTime"]  # memory:// needs no check
    assert checks_from_settings(load_settings(), cache_backend=MemoryBackend()).__len__() == 1


def test_settings_checks_use_the_active_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_URL", "redis://127.0.0.1:6379/0")
    assert [c.key for c in checks_from_settings()] == ["cache:responseTime"]


def test_settings_cache_check_reports_the_real_redis_error() -> None:
    """backend_kit's cache turns Redis errors into misses on purpose; its health check
    must not: it reports the outage, and recovery."""
    with redis_server() as server:
        settings = load_settings(cache_url=server.url, cache_timeout=0.5)
        runner = HealthRunner(checks_from_settings(settings), settings=settings, cache_seconds=0)
        assert runner.ready().status == "pass"
        server.stop()
        report = runner.ready()
        assert report.status == "fail"
        assert report.checks[0].status == "fail"
        assert "Error" in (report.checks[0].output or "")
        server.start()
        assert runner.ready().status == "pass"


def test_importing_health_does_not_import_clients() -> None:
    import subprocess
    import sys

    code = (
        "import sys, backend_kit, backend_kit.health; "
        "print(sorted(m for m in ('redis', 'psycopg', 'flask', 'django') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ
    )
    assert out.stdout.strip() == "[]"
