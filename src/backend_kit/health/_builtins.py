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
from collections.abc import Callable, Collection
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
    from backend_kit._settings import get_settings

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
    """Open the SQLite database at *path* read-write (never creating it) and run
    ``SELECT 1``. Fails when the file is missing, unreadable or locked past *timeout*.

    Examples:
        >>> sqlite_check("db.sqlite3").key
        'sqlite:responseTime'
    """
    text = os.fspath(path)

    def run() -> Observation:
        import sqlite3

        uri = "file::memory:" if text == ":memory:" else f"{Path(text).resolve().as_uri()}?mode=rw"
        started = time.perf_counter()
        connection = sqlite3.connect(uri, uri=True, timeout=_effective_timeout(timeout))
        with closing(connection):
            connection.execute("SELECT 1").fetchone()
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
) -> HealthCheck:
    """Send ``PING`` to Redis, given a URL or a (synchronous) redis-py client.

    From a URL, each run opens one connection with connect and socket timeouts set to
    *timeout*, without retries, and closes it. A client you pass is used as it is
    (give it timeouts). Observes the response time in ms. Needs ``backend-kit[redis]``.

    Examples:
        >>> redis_check("redis://127.0.0.1:6379/0").key
        'redis:responseTime'
    """
    url = None if hasattr(target, "ping") else _plain(target)

    def run() -> Observation:
        if url is None:
            started = time.perf_counter()
            target.ping()  # type: ignore[union-attr]
            return _elapsed_ms(started)
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise _missing("redis", "redis") from None
        seconds = _effective_timeout(timeout)
        started = time.perf_counter()
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=seconds,
            socket_timeout=seconds,
            retry=Retry(NoBackoff(), 0),  # one attempt: the probe has no time for more
            single_connection_client=True,
            client_name="backend_kit-health",
        )
        with closing(client):
            client.ping()
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

    The request goes through `backend_kit.http` (when httpx is installed, else the
    standard library), so it carries the request id and trace context and is logged as
    ``http_request``; it is made once, without retries or circuit breaker, with
    *timeout* on connect and every read. The name defaults to the host name. Observes
    the response time in ms.

    Examples:
        >>> http_check("https://payments.internal/health", expected_status=(200, 204)).key
        'payments.internal:responseTime'
    """
    target = _plain(url)
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("http_check needs an http:// or https:// URL with a host name")
    expected = {expected_status} if isinstance(expected_status, int) else set(expected_status)

    def run() -> Observation:
        started = time.perf_counter()
        status = _http_status(target, method, headers or {}, _effective_timeout(timeout))
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


def _http_status(target: str, method: str, headers: dict[str, str], timeout: float) -> int:
    try:
        import httpx  # noqa: F401 - only to know whether backend_kit.http can run
    except ImportError:
        return _urllib_status(target, method, headers, timeout)
    from backend_kit import http

    with http.client(attempts=1, breaker=False, timeout=timeout) as client:
        return int(client.request(method, target, headers=headers).status_code)


def _urllib_status(target: str, method: str, headers: dict[str, str], timeout: float) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(target, method=method, headers=headers)  # noqa: S310 - scheme checked by the caller
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)


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
      implies); without a backend, a `redis_check` for a ``redis://`` ``CACHE_URL`` and
      nothing for ``memory://`` (an in-process cache cannot be unreachable).
    """
    if settings is None:
        from backend_kit._settings import get_settings

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
    elif settings.cache_url.scheme in ("redis", "rediss", "unix"):
        registry.add(redis_check(settings.cache_url))
    return registry
