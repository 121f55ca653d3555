"""The Redis backend against real servers: sharing, locks, signing, outages."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from structlog.testing import capture_logs

import backend_kit
from backend_kit import RedisCache, cached
from backend_kit._cache._breaker import CircuitBreaker
from backend_kit._cache._redis import VERSION_TTL_SECONDS

from .servers import redis_server, silent_tcp_server

pytestmark = pytest.mark.redis


@pytest.fixture
def prefix() -> str:
    return f"bk-test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def cache(redis_url: str, prefix: str) -> Iterator[RedisCache]:
    backend = RedisCache(redis_url, prefix=prefix)
    yield backend
    backend.clear()
    assert not list(backend.client.scan_iter(match=prefix + "*"))
    backend.close()


def test_values_round_trip_and_are_shared(redis_url: str, cache: RedisCache, prefix: str) -> None:
    cache.set("user:1", {"name": "Ada", "tags": ["a"]}, ttl=60)
    other = RedisCache(redis_url, prefix=prefix)
    assert other.get("user:1") == {"name": "Ada", "tags": ["a"]}
    assert other.get("missing", 0) == 0
    cache.delete("user:1")
    assert other.get("user:1") is None
    assert cache.get_or_set("n", lambda: None, ttl=60) is None
    assert cache.get_or_set("n", lambda: 1, ttl=60) is None  # None is a cached value
    other.close()


def test_ttl_namespace_and_clear(cache: RedisCache) -> None:
    cache.set("short", 1, ttl=0.05)
    cache.set("kept", 2, ttl=60, namespace="users")
    time.sleep(0.1)
    assert cache.get("short") is None
    assert cache.get("kept", namespace="users") == 2
    cache.invalidate_namespace("users")
    assert cache.get("kept", namespace="users") is None
    cache.set("kept", 3, ttl=60, namespace="users")
    assert cache.get("kept", namespace="users") == 3


def test_non_json_value_has_clear_error(cache: RedisCache) -> None:
    with pytest.raises(TypeError, match="CACHE_SERIALIZER=pickle"):
        cache.set("x", {1, 2}, ttl=60)


def test_decorated_function_on_redis(cache: RedisCache) -> None:
    loads: list[int] = []

    @cached(ttl=60, cache=cache)
    def double(n: int) -> int:
        loads.append(n)
        return n * 2

    assert [double(1), double(1), double(2)] == [2, 2, 4]
    double.invalidate(1)
    assert double(1) == 2
    assert loads == [1, 2, 1]
    double.cache_clear()
    assert double(2) == 4
    assert loads == [1, 2, 1, 2]


def test_stampede_threads_on_redis(cache: RedisCache, prefix: str) -> None:
    counter = prefix + "loads"

    @cached(ttl=60, cache=cache)
    def slow() -> dict[str, str]:
        cache.client.incr(counter)
        time.sleep(0.05)
        return {"token": uuid.uuid4().hex}

    barrier = threading.Barrier(32)
    results: list[dict[str, str]] = []

    def worker() -> None:
        barrier.wait()
        results.append(slow())

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert int(cache.client.get(counter) or 0) == 1
    assert len(results) == 32
    assert all(result == results[0] for result in results)


def test_stampede_async_tasks_on_redis(cache: RedisCache) -> None:
    loads = 0

    @cached(ttl=60, cache=cache)
    async def slow() -> str:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return uuid.uuid4().hex

    async def main() -> list[str]:
        return await asyncio.gather(*(slow() for _ in range(32)))

    results = asyncio.run(main())
    assert loads == 1
    assert len(set(results)) == 1
    assert asyncio.run(slow()) == results[0]


_WORKER = textwrap.dedent(
    """
    import sys, threading, time, uuid
    from backend_kit import RedisCache
    url, prefix, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    cache = RedisCache(url, prefix=prefix)

    def load():
        cache.client.incr(prefix + "loads")
        time.sleep(0.05)
        return uuid.uuid4().hex

    results = []
    def worker():
        results.append(cache.get_or_set("hot", load, ttl=60))
    threads = [threading.Thread(target=worker) for _ in range(8)]
    time.sleep(max(0.0, start - time.time()))
    for t in threads: t.start()
    for t in threads: t.join()
    print(" ".join(results))
    """
)


def test_single_flight_across_processes(redis_url: str, cache: RedisCache, prefix: str) -> None:
    start = time.time() + 2.0  # every process imports and connects before the release
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, redis_url, prefix, str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=30)[0].split() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    values = [value for output in outputs for value in output]
    assert len(values) == 32
    assert len(set(values)) == 1
    assert int(cache.client.get(prefix + "loads") or 0) == 1


def test_expired_lock_of_a_dead_holder_is_taken_over(cache: RedisCache) -> None:
    # A holder that died leaves its lock behind until it expires.
    full_key = cache._key("default", "orphan")
    cache.client.set(cache._lock_key(full_key), "dead-holder", px=300)
    started = time.monotonic()
    assert cache.get_or_set("orphan", lambda: "loaded", ttl=60) == "loaded"
    assert time.monotonic() - started >= 0.25


def test_pickle_is_signed_and_a_bad_signature_is_a_logged_miss(
    redis_url: str, cache: RedisCache, prefix: str
) -> None:
    signer = RedisCache(redis_url, prefix=prefix, serializer="pickle", signing_key="k" * 32)
    impostor = RedisCache(redis_url, prefix=prefix, serializer="pickle", signing_key="x" * 32)
    signer.set("obj", {1, 2, 3}, ttl=60)
    assert signer.get("obj") == {1, 2, 3}
    with capture_logs() as logs:
        assert impostor.get("obj") is None
        assert cache.get("obj") is None  # JSON-only: never unpickles
    mismatches = [log for log in logs if log["event"] == "cache_signature_mismatch"]
    assert len(mismatches) == 2
    assert mismatches[0]["log_level"] == "warning"
    with pytest.raises(ValueError, match="signing key"):
        RedisCache(redis_url, serializer="pickle")
    signer.close()
    impostor.close()


def test_outage_falls_back_to_memory_and_probing_resumes_redis() -> None:
    with redis_server() as server:
        backend = RedisCache(
            server.url, prefix="bk-outage:", failure_threshold=3, probe_interval=0.3, timeout=0.5
        )
        loads: list[int] = []

        @cached(ttl=60, cache=backend)
        def value(n: int) -> int:
            loads.append(n)
            return n * 10

        assert value(1) == 10
        assert value(1) == 10
        assert loads == [1]
        assert value.cache_info().fallbacks == 0

        server.stop()
        with capture_logs() as logs:
            results = [value(1) for _ in range(20)] + [value(2) for _ in range(20)]
        assert results == [10] * 20 + [20] * 20  # no Redis error reaches the caller
        # The memory tier: one load per key for the whole outage, not one per call.
        assert loads == [1, 1, 2]
        assert value.cache_info().fallbacks == 40
        assert value.cache_info().hits == 1 + 38
        warnings = [log for log in logs if log["event"] == "cache_unavailable"]
        assert len(warnings) == 1  # one per interval, not one per call
        assert warnings[0]["log_level"] == "warning"
        assert warnings[0]["error"] == "ConnectionError"
        assert backend.breaker.is_open
        assert backend.fallbacks >= 40

        # Between probes Redis is not contacted even though it is back.
        server.start()
        assert value(1) == 10
        assert backend.breaker.is_open
        assert len(loads) == 3

        # The next probe reaches Redis: back to Redis, and the memory tier is dropped.
        deadline = time.monotonic() + 5.0
        with capture_logs() as logs:
            while backend.breaker.failing and time.monotonic() < deadline:
                value(1)
                time.sleep(0.02)
        assert not backend.breaker.failing
        assert [log["event"] for log in logs] == ["cache_recovered"]
        assert loads == [1, 1, 2, 1]  # Redis came back empty: loaded once more, stored
        fallbacks = value.cache_info().fallbacks
        assert value(1) == 10  # and now a hit in Redis
        assert value.cache_info().fallbacks == fallbacks
        assert len(loads) == 4
        assert backend.client.exists(backend._key("default", _key_of(value, 1))) == 1
        backend.clear()
        backend.close()


def _key_of(function: object, n: int) -> str:
    return f"{function.__module__}.{function.__qualname__}:[{n}]"  # type: ignore[attr-defined]


def test_hung_server_is_skipped_after_repeated_timeouts() -> None:
    with silent_tcp_server() as port:
        backend = RedisCache(
            f"redis://127.0.0.1:{port}/0", timeout=0.2, failure_threshold=2, probe_interval=30
        )
        calls = 0

        @cached(ttl=60, cache=backend)
        def value() -> int:
            nonlocal calls
            calls += 1
            return calls

        started = time.monotonic()
        with capture_logs() as logs:
            results = [value() for _ in range(20)]
        elapsed = time.monotonic() - started
        # Without the breaker: 20 reads, each waiting 0.2 s (4 s). With it: two timeouts.
        assert elapsed < 2.0
        assert results == [1] * 20  # loaded once, then answered from the memory tier
        assert value.cache_info().fallbacks == 20
        assert len([log for log in logs if log["event"] == "cache_unavailable"]) == 1
        backend.close()


def test_redis_errors_are_redis_py_errors_not_ours() -> None:
    # The client underneath is a plain redis-py client with timeouts set.
    backend = RedisCache("redis://127.0.0.1:1/0", timeout=0.3)
    kwargs = backend.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.3
    assert kwargs["socket_connect_timeout"] == 0.3
    assert isinstance(backend.client, redis.Redis)
    assert backend.get("anything") is None
    backend.close()


def test_the_client_is_the_only_retry_layer_whatever_the_url_says() -> None:
    # A query string asking for long timeouts and retries is overridden: the outage
    # handling of RedisCache is the one retry layer, and every call is bounded.
    with silent_tcp_server() as port:
        backend = RedisCache(
            f"redis://127.0.0.1:{port}/0?socket_timeout=30&retry_on_timeout=true",
            timeout=0.2,
        )
        connection = backend.client.connection_pool.make_connection()
        assert connection.retry.get_retries() == 0
        assert connection.socket_timeout == connection.socket_connect_timeout == 0.2
        # Maintenance notifications would relax the timeout to 10 s during a maintenance.
        assert not backend.client.connection_pool.maint_notifications_enabled()

        async def async_connection() -> tuple[int, float | None]:
            client = await backend._aclient()
            made = client.connection_pool.make_connection()
            return made.retry.get_retries(), made.socket_timeout

        assert asyncio.run(async_connection()) == (0, 0.2)

        started = time.monotonic()
        assert backend.get("anything") is None
        elapsed = time.monotonic() - started
        # One read timeout; redis-py's own defaults would retry 10 times with backoff.
        assert 0.15 < elapsed < 1.0
        backend.close()


def test_a_load_running_during_invalidation_is_not_stored_in_redis(cache: RedisCache) -> None:
    def load_then_get_invalidated() -> str:
        cache.invalidate_namespace("fenced")
        return "outdated"

    assert cache.get_or_set("k", load_then_get_invalidated, ttl=60, namespace="fenced") == (
        "outdated"
    )
    assert cache.get("k", namespace="fenced") is None
    cache.set("k", "fresh", ttl=60, namespace="fenced")
    assert cache.get_or_set("k", lambda: "unused", ttl=60, namespace="fenced") == "fresh"


def test_the_namespace_version_expires_and_each_load_refreshes_it(
    cache: RedisCache, prefix: str
) -> None:
    # The version of the namespace slice that the value's key falls in.
    version_key = cache._version_key(cache._key("tenants", "a"))
    day_ms = VERSION_TTL_SECONDS * 1000
    cache.get_or_set("a", lambda: 1, ttl=60, namespace="tenants")
    first = cache.client.get(version_key)
    assert first is not None
    assert 0 < cache.client.pttl(version_key) <= day_ms
    cache.client.pexpire(version_key, 5_000)  # as if the namespace had been idle
    cache.delete("a", namespace="tenants")
    cache.get_or_set("a", lambda: 2, ttl=60, namespace="tenants")
    assert cache.client.pttl(version_key) > 5_000  # refreshed by the load
    assert cache.client.get(version_key) == first  # and not replaced
    cache.invalidate_namespace("tenants")
    second = cache.client.get(version_key)
    assert second not in (None, first)
    assert 0 < cache.client.pttl(version_key) <= day_ms


def test_an_expired_version_never_lets_an_outdated_load_be_stored(
    cache: RedisCache, prefix: str
) -> None:
    """The load starts, the namespace is invalidated, then its version expires before the
    load ends: with counters the version would read as it did at the start."""
    version_key = cache._version_key(cache._key("fenced", "k"))

    def load_invalidated_then_expired() -> str:
        cache.invalidate_namespace("fenced")
        cache.client.delete(version_key)  # what the expiry does
        return "outdated"

    assert cache.get_or_set("k", load_invalidated_then_expired, ttl=60, namespace="fenced") == (
        "outdated"
    )
    assert cache.get("k", namespace="fenced") is None
    assert cache.get_or_set("k", lambda: "fresh", ttl=60, namespace="fenced") == "fresh"
    assert cache.get("k", namespace="fenced") == "fresh"


def test_stale_value_is_served_while_one_caller_refreshes_on_redis(cache: RedisCache) -> None:
    from .test_cache import _stale_scenario

    _stale_scenario(cache)


def test_stale_value_is_served_while_another_process_refreshes(cache: RedisCache) -> None:
    loads = 0

    @cached(ttl=0.05, stale_ttl=30, cache=cache)
    def value() -> int:
        nonlocal loads
        loads += 1
        return loads

    assert value() == 1
    time.sleep(0.1)
    # Another process holds the refresh lock for this key.
    full_key = cache._key("default", f"{value.__module__}.{value.__qualname__}:[]")
    cache.client.set(cache._lock_key(full_key), "other-process", px=5000)
    assert value() == 1
    assert loads == 1
    cache.client.delete(cache._lock_key(full_key))
    assert value() == 2


def test_check_round_trips_or_raises_the_server_error(cache: RedisCache) -> None:
    cache.check()
    assert not list(cache.client.scan_iter(match=cache.prefix + "{#health|*"))
    down = RedisCache("redis://127.0.0.1:1/0", timeout=0.2)
    with pytest.raises(redis.ConnectionError):
        down.check()
    down.close()


def test_signature_mismatch_log_leaves_arguments_out(redis_url: str, prefix: str) -> None:
    signer = RedisCache(redis_url, prefix=prefix, serializer="pickle", signing_key="k" * 32)
    reader = RedisCache(redis_url, prefix=prefix)

    def lookup(email: str) -> int:
        return 1

    cached(ttl=60, cache=signer)(lookup)("ada@example.com")
    with capture_logs() as logs:
        assert cached(ttl=60, cache=reader)(lookup)("ada@example.com") == 1
    mismatches = [log for log in logs if log["event"] == "cache_signature_mismatch"]
    assert mismatches
    assert all("lookup" in log["key"] for log in mismatches)
    assert "ada@example.com" not in str(mismatches)
    signer.clear()
    signer.close()
    reader.close()


def test_outage_warning_never_shows_the_password() -> None:
    backend = RedisCache("redis://:hunter2-secret@127.0.0.1:1/0", timeout=0.2)
    with capture_logs() as logs:
        assert backend.get_or_set("k", lambda: "loaded", ttl=60) == "loaded"
    assert [log["event"] for log in logs] == ["cache_unavailable"]
    assert "hunter2-secret" not in str(logs)
    assert "***" in logs[0]["backend"]
    backend.close()


def test_half_open_probing_lets_one_call_through_per_interval() -> None:
    now = [100.0]
    recovered: list[bool] = []
    breaker = CircuitBreaker(
        backend="test",
        threshold=2,
        probe_interval=0.5,
        clock=lambda: now[0],
        on_recovered=lambda: recovered.append(True),
    )
    error = ConnectionError("refused")
    with capture_logs() as logs:
        breaker.failure(error)
        assert breaker.allow()  # below the threshold: still contacted
        breaker.failure(error)
        assert breaker.is_open
        assert not breaker.allow()
        now[0] += 0.5
        assert breaker.allow()  # the probe
        assert not breaker.allow()  # the others skip while it runs
        # The probe never reports (its caller was cancelled): its slot frees itself.
        now[0] += 0.5
        assert breaker.allow()
        breaker.failure(error)
        assert not breaker.allow()
        now[0] += 0.5
        assert breaker.allow()
        breaker.success()
    assert recovered == [True]
    assert not breaker.failing
    assert breaker.allow()
    assert [log["event"] for log in logs] == ["cache_unavailable", "cache_recovered"]
    assert logs[1]["failures"] == 3


def test_async_calls_fall_back_to_memory_during_an_outage() -> None:
    with redis_server() as server:
        backend = RedisCache(server.url, prefix="bk-async-outage:", probe_interval=0.2)
        loads: list[int] = []

        @cached(ttl=60, cache=backend)
        async def value(n: int) -> int:
            loads.append(n)
            await asyncio.sleep(0.01)
            return n * 10

        async def burst(n: int) -> list[int]:
            return await asyncio.gather(*(value(n) for _ in range(10)))

        assert asyncio.run(burst(1)) == [10] * 10
        assert loads == [1]
        server.stop()
        assert asyncio.run(burst(1)) == [10] * 10  # one load into the memory tier
        assert asyncio.run(burst(1)) == [10] * 10  # then memory hits
        assert loads == [1, 1]
        assert value.cache_info().fallbacks == 20
        server.start()

        async def until_recovered() -> None:
            deadline = time.monotonic() + 5.0
            while backend.breaker.failing and time.monotonic() < deadline:
                await value(1)
                await asyncio.sleep(0.02)

        asyncio.run(until_recovered())
        assert not backend.breaker.failing
        assert loads == [1, 1, 1]  # loaded once more into the restarted Redis
        assert asyncio.run(burst(1)) == [10] * 10
        assert loads == [1, 1, 1]
        backend.clear()
        backend.close()


def test_a_forked_child_gets_fresh_cache_state(redis_url: str, prefix: str) -> None:
    # What os.register_at_fork(after_in_child=...) calls: the child then uses its own
    # connections, locks and breaker, and the cache works as before.
    backend = RedisCache(redis_url, prefix=prefix)
    backend.breaker.failure(ConnectionError("before the fork"))
    backend.set("k", 1, ttl=60)
    old_pool_connections = backend.client.connection_pool._created_connections  # type: ignore[attr-defined]
    backend._reset_after_fork()
    assert not backend.breaker.failing
    assert backend.client.connection_pool._created_connections == 0  # type: ignore[attr-defined]
    assert old_pool_connections >= 1
    assert backend.get("k") == 1
    assert asyncio.run(backend.aget_or_set("k", _never, ttl=60)) == 1
    backend.clear()
    backend.close()


async def _never() -> int:
    raise AssertionError("the value is cached")


def test_async_calls_on_a_hung_server_are_bounded_then_skip_it() -> None:
    with silent_tcp_server() as port:
        backend = RedisCache(
            f"redis://127.0.0.1:{port}/0", timeout=0.2, failure_threshold=2, probe_interval=30
        )
        calls = 0

        @cached(ttl=60, cache=backend)
        async def value() -> int:
            nonlocal calls
            calls += 1
            return calls

        async def sequence() -> tuple[list[int], float, float]:
            started = time.monotonic()
            first = await value()  # a read and a lock claim, each waiting out 0.2 s
            first_took = time.monotonic() - started
            started = time.monotonic()
            rest = [await value() for _ in range(20)]  # the breaker is open: no waiting
            return [first, *rest], first_took, time.monotonic() - started

        with capture_logs():
            results, first_took, rest_took = asyncio.run(sequence())
        assert results == [1] * 21
        assert 0.3 < first_took < 2.0  # two read timeouts, never redis-py's retries
        assert rest_took < 0.5
        assert value.cache_info().fallbacks == 21
        backend.close()


# --- what is accepted from Redis ---------------------------------------------------------


def test_json_stays_json_with_a_signing_key(redis_url: str, prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=prefix, serializer="json", signing_key="k" * 32)
    cache.set("plain", {"a": [1, 2]}, ttl=60)
    raw = cache.client.get(cache._key("default", "plain"))
    assert raw == b'j{"a":[1,2]}'
    with pytest.raises(TypeError, match="CACHE_SERIALIZER=pickle"):
        cache.set("set", {1, 2}, ttl=60)
    cache.clear()
    cache.close()


def test_pickle_mode_accepts_only_correctly_signed_values(redis_url: str, prefix: str) -> None:
    """Whoever can write to Redis must not choose what the application reads: an unsigned
    JSON value, garbage and a pickle signed with another key are all misses, counted,
    with one rate-limited warning."""
    signer = RedisCache(redis_url, prefix=prefix, serializer="pickle", signing_key="k" * 32)

    @cached(ttl=60, cache=signer)
    def profile(user: int) -> dict[str, object]:
        return {"user": user, "admin": False}

    forged = {
        1: b'j{"user": 1, "admin": true}',
        2: b"garbage",
        3: b"p" + b"\0" * 32 + b"not a pickle",
    }
    # Fill the cache, then overwrite what the function reads with forged bytes.
    for user in forged:
        profile(user)
    keys = sorted(signer.client.scan_iter(match=f"{prefix}*profile*"))
    assert len(keys) == 3  # arguments 1, 2, 3, sorted alike
    for key, raw in zip(keys, forged.values(), strict=True):
        signer.client.set(key, raw, px=60_000)
    with capture_logs() as logs:
        results = [profile(user) for user in (1, 2, 3)]
    assert results == [{"user": user, "admin": False} for user in (1, 2, 3)]  # reloaded
    info = profile.cache_info()
    # Each refused value is counted at every read: the wrapper's, and the loader's
    # re-check once it holds the lock.
    assert info.mismatches >= 3
    assert info.loads == 6
    warnings = [log for log in logs if log["event"] == "cache_signature_mismatch"]
    assert len(warnings) == 1  # rate-limited: one per interval, not one per read
    assert warnings[0]["refused"] == 1
    signer.clear()
    signer.close()


def test_rotated_key_values_are_read_then_rewritten(redis_url: str, prefix: str) -> None:
    old = RedisCache(redis_url, prefix=prefix, serializer="pickle", signing_key="old-" * 8)
    old.set("obj", {1, 2, 3}, ttl=120)
    full_key = old._key("default", "obj")
    written_by_old = old.client.get(full_key)
    new = RedisCache(
        redis_url,
        prefix=prefix,
        serializer="pickle",
        signing_key="new-" * 8,
        signing_key_fallbacks=["old-" * 8],
    )
    with capture_logs() as logs:
        assert new.get("obj") == {1, 2, 3}
    assert [log for log in logs if log["event"] == "cache_signature_mismatch"] == []
    rewritten = new.client.get(full_key)
    assert rewritten != written_by_old
    assert 100_000 < new.client.pttl(full_key) <= 120_000  # the expiry is kept
    # Now signed with the new key only: a process without the fallback reads it.
    newest = RedisCache(redis_url, prefix=prefix, serializer="pickle", signing_key="new-" * 8)
    assert newest.get("obj") == {1, 2, 3}
    assert newest.signature_mismatches == 0
    # And the old key alone no longer can.
    assert old.get("obj") is None
    assert old.signature_mismatches == 1
    for cache in (old, new, newest):
        cache.clear()
        cache.close()


def test_fallback_keys_from_the_settings(redis_url: str, prefix: str) -> None:
    settings = backend_kit.load_settings(
        cache_url=redis_url,
        cache_key_prefix=prefix,
        cache_serializer="pickle",
        cache_signing_key="new-" * 8,
        cache_signing_key_fallbacks="old-key-number-1,old-key-number-2",
    )
    assert "old-key-number-1" not in repr(settings) + settings.model_dump_json()
    redactor = backend_kit.Redactor.from_settings(settings)
    assert redactor.redact_text("key old-key-number-2 leaked") == "key *** leaked"
