"""Built-in checks for the dependencies a service usually has, and the checks implied
by the settings (``DATABASE_URL``, ``CACHE_URL``).

Every client opened here has connect and read timeouts taken from the check's timeout,
and is closed before the check returns, whatever happens.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from contextlib import closing, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from backend_kit._cache import CacheBackend

from ._checks import CheckFunction, ComponentType, HealthCheck, HealthRegistry, Observation

if TYPE_CHECKING:
    from pydantic import SecretStr

    from backend_kit._settings import Settings

__all__ = [
    "CacheLike",
    "cache_check",
    "callable_check",
    "checks_from_settings",
    "disk_space_check",
    "http_check",
    "memory_check",
    "postgres_check",
    "redis_check",
    "sentry_check",
    "sqlite_check",
]


class CacheLike(Protocol):
    """Any cache backend with ``get``, ``set`` and ``delete`` (backend_kit's own,
    a redis-py client, ...)."""

    def get(self, key: str, /) -> Any: ...
    def set(self, key: str, value: Any, /) -> Any: ...
    def delete(self, key: str, /) -> Any: ...


class _PingClient(Protocol):
    def ping(self) -> Any: ...


def _effective_timeout(timeout: float | None) -> float:
    if timeout is not None:
        return timeout
    from backend_kit._active import get_settings

    return get_settings().health_check_timeout


def _plain(url: str | SecretStr) -> str:
    return url if isinstance(url, str) else url.get_secret_value()


def _elapsed_ms(started: float) -> Observation:
    return Observation(round((time.perf_counter() - started) * 1000, 3), "ms")


def _missing(package: str, extra: str) -> RuntimeError:
    return RuntimeError(
        f"this health check needs {package}, which is not installed; "
        f'install it with: pip install "backend-kit[{extra}]"'
    )


def postgres_check(
    url: str | SecretStr,
    *,
    name: str = "postgresql",
    timeout: float | None = None,
    critical: bool = True,
    query: str = "SELECT 1",
) -> HealthCheck:
    """Connect to PostgreSQL with psycopg and run *query* (a real round trip).

    The connection has a connect timeout, a statement timeout and a TCP user timeout
    derived from *timeout*, and is closed after every run. Observes the response time
    in ms. Needs ``backend-kit[postgres]``.

    Examples:
        >>> check = postgres_check("postgresql://app:secret@127.0.0.1:5432/app")
        >>> check.key
        'postgresql:responseTime'
    """
    dsn = _plain(url)

    def run() -> Observation:
        try:
            import psycopg
        except ImportError:
            raise _missing("psycopg", "postgres") from None
        seconds = _effective_timeout(timeout)
        milliseconds = max(1, int(seconds * 1000))
        # A little under the check's timeout, so a slow query ends with the server's
        # own error (and is cancelled there) before the probe gives up on it.
        statement_ms = max(1, int(milliseconds * 0.8))
        started = time.perf_counter()
        with psycopg.connect(
            dsn,
            # libpq counts whole seconds (and treats 1 as 2); the runner still answers
            # on time, this only bounds how long the thread lingers.
            connect_timeout=max(1, math.ceil(seconds)),
            options=f"-c statement_timeout={statement_ms}",
            tcp_user_timeout=milliseconds,
            application_name="backend_kit-health",
            autocommit=True,
        ) as connection:
            connection.execute(query).fetchone()
        return _elapsed_ms(started)

    return HealthCheck(
        name,
        run=run,
        component_type="datastore",
        critical=critical,
        timeout=timeout,
        measurement="responseTime",
    )


def sqlite_check(
    path: str | os.PathLike[str],
    *,
    name: str = "sqlite",
    timeout: float | None = None,
    critical: bool = True,
) -> HealthCheck:
    """Open the SQLite database at *path* read-write (never creating it) and read its
    schema, as the application's own queries would.

    Fails when the file is missing or unreadable, when it holds no table (an empty file
    left where the database was), or when another connection or process holds a lock
    that keeps the schema from being read past the check's busy timeout (0.8 of
    *timeout*, so SQLite's own "database is locked" is reported, not a bare timeout).

    Examples:
        >>> sqlite_check("db.sqlite3").key
        'sqlite:responseTime'
    """
    text = os.fspath(path)

    def run() -> Observation:
        import sqlite3

        in_memory = text == ":memory:"
        uri = "file::memory:" if in_memory else f"{Path(text).resolve().as_uri()}?mode=rw"
        busy_timeout = _effective_timeout(timeout) * 0.8
        started = time.perf_counter()
        connection = sqlite3.connect(uri, uri=True, timeout=busy_timeout)
        with closing(connection):
            # Reading sqlite_master takes a shared lock on the file, which an EXCLUSIVE
            # lock held elsewhere refuses; SELECT 1 would not touch the file at all.
            (tables,) = connection.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
            ).fetchone()
        if not tables and not in_memory:
            raise RuntimeError(
                f"the database {Path(text).name} has no tables: the file is empty or not "
                "the application's database (was it moved, or not migrated?)"
            )
        return _elapsed_ms(started)

    return HealthCheck(
        name,
        run=run,
        component_type="datastore",
        critical=critical,
        timeout=timeout,
        measurement="responseTime",
    )


def redis_check(
    target: str | SecretStr | _PingClient,
    *,
    name: str = "redis",
    timeout: float | None = None,
    critical: bool = True,
    component_type: ComponentType = "cache",
    tls_options: Mapping[str, Any] | None = None,
) -> HealthCheck:
    """Send ``PING`` to Redis, given a URL or a (synchronous) redis-py client.

    A URL may name one server (``redis://``, ``rediss://``, ``unix://``), a Sentinel
    service (``redis+sentinel://``: the check pings the master the Sentinels name now)
    or a cluster (``redis+cluster://``: it pings every primary, and fails when the
    cluster does not cover every slot). *tls_options* fill in the TLS options a
    ``rediss`` URL leaves out. Each run connects with connect and socket timeouts set
    to *timeout*, without retries, and closes its connections. A client you pass is
    used as it is (give it timeouts). Observes the response time in ms. Needs
    ``backend-kit[redis]``.

    Raises `ValueError` at once for a malformed URL.

    Examples:
        >>> redis_check("redis://127.0.0.1:6379/0").key
        'redis:responseTime'
    """
    from backend_kit._redis_clients import (
        close_client,
        parse_redis_url,
        ping_every_node,
        redis_client,
    )

    redis_target = None
    if not hasattr(target, "ping"):
        redis_target = parse_redis_url(_plain(target), tls_defaults=tls_options)

    def run() -> Observation:
        if redis_target is None:
            started = time.perf_counter()
            target.ping()  # type: ignore[union-attr]
            return _elapsed_ms(started)
        try:
            import redis  # noqa: F401
        except ImportError:
            raise _missing("redis", "redis") from None
        started = time.perf_counter()
        # The kit's one client policy: timeouts, and no retries (the probe has no time
        # for more than one attempt).
        client = redis_client(redis_target, timeout=_effective_timeout(timeout), max_connections=4)
        try:
            ping_every_node(client)
        finally:
            close_client(client)
        return _elapsed_ms(started)

    return HealthCheck(
        name,
        run=run,
        component_type=component_type,
        critical=critical,
        timeout=timeout,
        measurement="responseTime",
    )


def cache_check(
    backend: CacheLike | CacheBackend,
    *,
    name: str = "cache",
    timeout: float | None = None,
    critical: bool = True,
) -> HealthCheck:
    """Write a unique value to *backend*, read it back and delete it.

    Works with any object with ``get(key)``, ``set(key, value)`` and ``delete(key)``:
    backend_kit's cache backends, a redis-py client, a dict-like wrapper. Fails when
    the value read is not the value written (a cache that swallows its errors returns
    a miss). Observes the round-trip time in ms.
    """

    def run() -> Observation:
        started = time.perf_counter()
        if isinstance(backend, CacheBackend):
            # Its get/set fall back to misses by design; check() reports the real error.
            backend.check()
            return _elapsed_ms(started)
        key = f"backend_kit:health:{uuid.uuid4().hex}"
        value = uuid.uuid4().hex
        try:
            backend.set(key, value)
            read = backend.get(key)
        finally:
            with suppress(Exception):
                backend.delete(key)
        if isinstance(read, bytes):
            read = read.decode("utf-8", "replace")
        if read != value:
            raise RuntimeError("the cache did not return the value just written to it")
        return _elapsed_ms(started)

    return HealthCheck(
        name,
        run=run,
        component_type="cache",
        critical=critical,
        timeout=timeout,
        measurement="responseTime",
    )


def disk_space_check(
    path: str | os.PathLike[str] = "/",
    *,
    min_free_bytes: int | None = None,
    min_free_percent: float | None = None,
    name: str = "disk",
    critical: bool = True,
    timeout: float | None = None,
) -> HealthCheck:
    """Check the free space of the file system holding *path*.

    Observes free percent when *min_free_percent* is given, free bytes otherwise; fails
    below either threshold.

    Examples:
        >>> disk_space_check("/", min_free_percent=5).key
        'disk:free'
    """
    if min_free_percent is not None and not 0 <= min_free_percent <= 100:
        raise ValueError("min_free_percent must be between 0 and 100")
    if min_free_bytes is not None and min_free_bytes < 0:
        raise ValueError("min_free_bytes must be zero or more")
    target = os.fspath(path)

    def run() -> Observation:
        usage = shutil.disk_usage(target)
        percent = round(usage.free / usage.total * 100, 2) if usage.total else 0.0
        if min_free_bytes is not None and usage.free < min_free_bytes:
            raise RuntimeError(f"{usage.free} bytes free, below the minimum of {min_free_bytes}")
        if min_free_percent is not None and percent < min_free_percent:
            raise RuntimeError(f"{percent} % free, below the minimum of {min_free_percent} %")
        if min_free_percent is not None:
            return Observation(percent, "%")
        return Observation(usage.free, "bytes")

    return HealthCheck(
        name,
        run=run,
        component_type="system",
        critical=critical,
        timeout=timeout,
        measurement="free",
    )


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource  # not on Windows; /proc is Linux only

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Peak, not current: the best portable figure. KiB on Linux, bytes on macOS.
        return int(peak if sys.platform == "darwin" else peak * 1024)


def memory_check(
    *,
    max_rss_bytes: int | None = None,
    name: str = "memory",
    critical: bool = True,
    timeout: float | None = None,
) -> HealthCheck:
    """Observe the resident memory of this process in bytes; fail above
    *max_rss_bytes* when it is given.

    Examples:
        >>> memory_check(max_rss_bytes=2 * 1024**3).key
        'memory:rss'
    """

    def run() -> Observation:
        rss = _resident_bytes()
        if max_rss_bytes is not None and rss > max_rss_bytes:
            raise RuntimeError(f"resident memory {rss} bytes is above the limit of {max_rss_bytes}")
        return Observation(rss, "bytes")

    return HealthCheck(
        name,
        run=run,
        component_type="system",
        critical=critical,
        timeout=timeout,
        measurement="rss",
    )


def http_check(
    url: str | SecretStr,
    *,
    name: str | None = None,
    expected_status: int | Collection[int] = 200,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
    critical: bool = True,
) -> HealthCheck:
    """Send an HTTP request to a dependency and expect *expected_status*.

    The request (stdlib urllib) has *timeout* on connect and every read; the response
    is closed. The name defaults to the host name. Observes the response time in ms.

    Examples:
        >>> http_check("https://payments.internal/health", expected_status=(200, 204)).key
        'payments.internal:responseTime'
    """
    import urllib.error
    import urllib.request

    target = _plain(url)
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("http_check needs an http:// or https:// URL with a host name")
    expected = {expected_status} if isinstance(expected_status, int) else set(expected_status)

    def run() -> Observation:
        request = urllib.request.Request(target, method=method, headers=headers or {})  # noqa: S310 - scheme checked above
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=_effective_timeout(timeout)) as response:  # noqa: S310
                status = int(response.status)
        except urllib.error.HTTPError as error:
            status = error.code
            error.close()
        if status not in expected:
            wanted = ", ".join(str(code) for code in sorted(expected))
            raise RuntimeError(f"HTTP status {status}, expected {wanted}")
        return _elapsed_ms(started)

    return HealthCheck(
        name or str(parts.hostname),
        run=run,
        component_type="http",
        critical=critical,
        timeout=timeout,
        measurement="responseTime",
    )


def callable_check(
    function: CheckFunction | Callable[[], Any],
    *,
    name: str | None = None,
    component_type: ComponentType = "custom",
    critical: bool = True,
    timeout: float | None = None,
    measurement: str = "status",
) -> HealthCheck:
    """Make a check of any plain or ``async`` function without arguments: it passes
    when the function returns, fails when it raises."""
    return HealthCheck(
        name or str(getattr(function, "__name__", "custom")),
        run=function,
        component_type=component_type,
        critical=critical,
        timeout=timeout,
        measurement=measurement,
    )


def sentry_check(*, name: str = "sentry", critical: bool = False) -> HealthCheck:
    """Whether the Sentry transport delivers: fails (non-critical by default, so
    readiness only warns) while events were dropped within the last warning interval,
    naming how many and why; otherwise passes, observing the events dropped since start.

    Examples:
        >>> sentry_check().key
        'sentry:droppedEvents'
    """

    def run() -> Observation:
        from backend_kit._sentry import dropped_sentry_events

        drops = dropped_sentry_events()
        if drops.recent and drops.seconds_since_last is not None:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(drops.by_reason.items()))
            raise RuntimeError(
                f"{drops.total} events dropped since start ({reasons}), the last "
                f"{drops.seconds_since_last:.0f} s ago; Sentry is not receiving them"
            )
        return Observation(drops.total, "events")

    return HealthCheck(
        name,
        run=run,
        component_type="http",
        critical=critical,
        measurement="droppedEvents",
    )


def _sqlite_path(url: str) -> str:
    path = urlsplit(url).path
    # sqlite:///relative.db and sqlite:////absolute/path.db, as Django and SQLAlchemy read them.
    path = path[1:] if path.startswith("/") else path
    return path or ":memory:"


def _cache_backend_from_settings(settings: Settings) -> CacheBackend | None:
    """The shared cache backend ``CACHE_URL`` names; ``None`` for ``memory://`` (an
    in-process cache cannot be unreachable)."""
    if settings.cache_url.scheme == "memory":
        return None
    from backend_kit._cache import default_cache

    return default_cache(settings)


def checks_from_settings(
    settings: Settings | None = None,
    *,
    cache_backend: CacheLike | CacheBackend | None = None,
) -> HealthRegistry:
    """A registry with the checks the settings imply; the one place the CLI and the
    Flask and Django integrations get them from.

    - ``DATABASE_URL`` ``postgres://``/``postgresql://``: `postgres_check`;
      ``sqlite://``: `sqlite_check`; other schemes get no built-in check.
    - The cache: a `cache_check` through *cache_backend* (or the backend ``CACHE_URL``
      implies); without a backend, a `redis_check` for a Redis ``CACHE_URL`` and
      nothing for ``memory://`` (an in-process cache cannot be unreachable).
    - ``SENTRY_DSN``: `sentry_check` (non-critical), so dropped events show.
    """
    if settings is None:
        from backend_kit._active import get_settings

        settings = get_settings()
    registry = HealthRegistry()
    database = settings.database_url
    if database is not None:
        if database.scheme in ("postgres", "postgresql"):
            registry.add(postgres_check(database))
        elif database.scheme.startswith("sqlite"):
            registry.add(sqlite_check(_sqlite_path(database.get_secret_value())))
    backend = cache_backend if cache_backend is not None else _cache_backend_from_settings(settings)
    if backend is not None:
        registry.add(cache_check(backend))
    elif settings.cache_url.scheme != "memory":
        from backend_kit._redis_clients import tls_options_from_settings

        registry.add(
            redis_check(settings.cache_url, tls_options=tls_options_from_settings(settings))
        )
    if settings.sentry_dsn is not None:
        registry.add(sentry_check())
    return registry
