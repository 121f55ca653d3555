"""The cached decorator and the memory backend: keys, counters, single-flight."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import pytest

import backend_kit
from backend_kit import (
    CacheInfo,
    MemoryCache,
    ReentrantCacheCallError,
    UnencodableArgumentError,
    cached,
    default_cache,
)
from backend_kit.testing import memory_cache, override_settings


def test_results_are_cached_and_counted() -> None:
    calls: list[int] = []

    @cached(ttl=60)
    def square(n: int) -> int:
        calls.append(n)
        return n * n

    assert [square(3), square(3), square(4)] == [9, 9, 16]
    assert calls == [3, 4]
    assert square.cache_info() == CacheInfo(hits=1, misses=2, loads=2, errors=0)
    assert square.__name__ == "square"


def test_keyword_order_does_not_matter_and_none_is_cached() -> None:
    calls: list[tuple[int, int]] = []

    @cached(ttl=60)
    def nothing(*, a: int, b: int) -> None:
        calls.append((a, b))

    assert nothing(a=1, b=2) is None
    assert nothing(b=2, a=1) is None
    assert calls == [(1, 2)]


def test_invalidate_clear_and_namespace() -> None:
    loads: list[str] = []

    @cached(ttl=60, namespace="users")
    def user(name: str) -> str:
        loads.append(name)
        return name.upper()

    @cached(ttl=60, namespace="users")
    def other(name: str) -> str:
        loads.append("other:" + name)
        return name

    user("a"), user("b"), other("c")
    user.invalidate("a")
    user("a"), user("b")
    assert loads == ["a", "b", "other:c", "a"]
    user.cache_clear()
    assert user.cache_info() == CacheInfo(0, 0, 0, 0)
    user("b"), other("c")
    assert loads[-1] == "b"
    user.invalidate_namespace()
    user("b"), other("c")
    assert loads[-2:] == ["b", "other:c"]


def test_expired_entries_are_loaded_again() -> None:
    loads: list[int] = []

    @cached(ttl=0.05)
    def value() -> int:
        loads.append(1)
        return len(loads)

    assert value() == 1
    time.sleep(0.1)
    assert value() == 2


def test_unencodable_argument_has_clear_error_and_key_function_fixes_it() -> None:
    class Thing:
        pass

    @cached(ttl=60)
    def f(thing: Thing) -> int:
        return 1

    with pytest.raises(UnencodableArgumentError, match=r"test_cache.*f\(\).*key="):
        f(Thing())

    @cached(ttl=60, key=lambda thing: "the-thing")
    def g(thing: Thing) -> int:
        return id(thing)

    first = g(Thing())
    assert g(Thing()) == first

    @cached(ttl=60, key=lambda n: n)  # type: ignore[arg-type, return-value]
    def bad(n: int) -> int:
        return n

    with pytest.raises(TypeError, match="must return a str"):
        bad(1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ttl": 0}, "ttl must be"),
        ({"ttl": 1, "maxsize": 0}, "maxsize must be"),
        ({"ttl": 1, "namespace": ""}, "namespace must be"),
        ({"ttl": 1, "cache": object()}, "cache must be"),
    ],
)
def test_bad_options_are_rejected(options: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        cached(**options)


def test_backend_direct_use() -> None:
    cache = MemoryCache(maxsize=2)
    cache.set("a", 1, ttl=60)
    assert cache.get("a") == 1
    assert cache.get("missing", "default") == "default"
    assert cache.get_or_set("b", lambda: 2, ttl=60) == 2
    assert cache.get_or_set("b", lambda: 3, ttl=60) == 2
    cache.set("c", 3, ttl=60)
    assert len(cache) == 2  # maxsize evicts
    cache.delete("c")
    assert cache.get("c") is None
    cache.set("x", 1, ttl=60, namespace="ns")
    cache.invalidate_namespace("ns")
    assert cache.get("x", namespace="ns") is None
    cache.clear()
    assert len(cache) == 0
    cache.check()


def test_stampede_threads_load_once() -> None:
    loads = 0
    lock = threading.Lock()

    @cached(ttl=60)
    def slow() -> object:
        nonlocal loads
        with lock:
            loads += 1
        time.sleep(0.05)
        return object()

    barrier = threading.Barrier(32)
    results: list[object] = []

    def worker() -> None:
        barrier.wait()
        results.append(slow())

    threads = [threading.Thread(target=worker) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert loads == 1
    assert len(results) == 32
    assert all(result is results[0] for result in results)
    info = slow.cache_info()
    assert (info.loads, info.hits + info.misses) == (1, 32)


def test_stampede_async_tasks_load_once() -> None:
    loads = 0

    @cached(ttl=60)
    async def slow() -> object:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return object()

    async def main() -> list[object]:
        return await asyncio.gather(*(slow() for _ in range(32)))

    results = asyncio.run(main())
    assert loads == 1
    assert all(result is results[0] for result in results)


def test_loader_exception_reaches_every_waiter_and_nothing_is_cached() -> None:
    attempts = 0

    @cached(ttl=60)
    def broken() -> int:
        nonlocal attempts
        attempts += 1
        time.sleep(0.05)
        raise ValueError("database is down")

    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait()
        try:
            broken()
        except ValueError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    assert attempts == 1
    assert len(errors) == 8
    assert broken.cache_info().errors == 1
    with pytest.raises(ValueError, match="database is down"):
        broken()
    assert attempts == 2


def test_async_loader_exception_reaches_every_task() -> None:
    @cached(ttl=60)
    async def broken() -> int:
        await asyncio.sleep(0.02)
        raise KeyError("gone")

    async def main() -> list[Any]:
        return await asyncio.gather(*(broken() for _ in range(5)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(result, KeyError) for result in results)
    assert broken.cache_info().loads == 1


def test_reentrant_call_raises_instead_of_deadlocking() -> None:
    @cached(ttl=60)
    def recursive(n: int) -> int:
        return recursive(n) + 1

    with pytest.raises(ReentrantCacheCallError, match="calls itself with the same arguments"):
        recursive(1)

    @cached(ttl=60)
    async def arecursive(n: int) -> int:
        return await arecursive(n) + 1

    with pytest.raises(ReentrantCacheCallError):
        asyncio.run(arecursive(1))


def test_memory_cache_helper_gives_fresh_caches() -> None:
    @cached(ttl=60)
    def value() -> int:
        return 1

    value()
    with memory_cache():
        value()
        assert default_cache().get("anything") is None
    assert value.cache_info().loads == 2


def test_cached_functions_follow_the_active_settings(redis_url: str) -> None:
    prefix = f"bk-test-{uuid.uuid4().hex[:12]}:"

    @cached(ttl=60)
    def value() -> str:
        return "loaded"

    value()
    with override_settings(cache_url=redis_url, cache_key_prefix=prefix):
        backend = default_cache()
        assert isinstance(backend, backend_kit.RedisCache)
        assert backend is default_cache()  # one pooled client per configuration
        assert value() == "loaded"  # a miss on Redis: the memory cache is not used
        assert backend.get(f"{value.__module__}.{value.__qualname__}:[]") == "loaded"
        with memory_cache():
            assert isinstance(default_cache(), MemoryCache)
        backend.clear()
    assert isinstance(default_cache(), MemoryCache)
    assert value.cache_info().loads == 2


def test_redis_password_is_not_shown() -> None:
    backend = backend_kit.RedisCache("redis://:hunter2-secret@127.0.0.1:1/0")
    assert "hunter2-secret" not in repr(backend)
    assert "hunter2-secret" not in backend.breaker.backend
    backend.close()


def test_import_does_not_import_redis() -> None:
    code = "import sys, backend_kit; print('redis' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_load_running_during_invalidation_is_not_stored() -> None:
    cache = MemoryCache()

    def load_then_get_invalidated() -> str:
        cache.invalidate_namespace("fenced")
        return "outdated"

    assert cache.get_or_set("k", load_then_get_invalidated, ttl=60, namespace="fenced") == (
        "outdated"
    )
    assert cache.get("k", namespace="fenced") is None


def test_positional_and_keyword_encodings_do_not_collide() -> None:
    @cached(ttl=60)
    def echo(*args: Any, **kwargs: Any) -> list[Any]:
        return [args, kwargs]

    assert echo(1, a=2) == [(1,), {"a": 2}]
    assert echo([1], {"a": 2}) == [([1], {"a": 2}), {}]
    assert echo.cache_info().loads == 2


def test_long_arguments_are_hashed_and_stable() -> None:
    from backend_kit._cache._keys import encode_arguments

    long = "x" * 500
    first = encode_arguments("f", (long,), {"b": 1, "a": 2})
    assert first == encode_arguments("f", (long,), {"a": 2, "b": 1})
    assert first.startswith("#")
    assert len(first) == 41


def test_namespace_with_colon_is_rejected() -> None:
    with pytest.raises(ValueError, match="without ':'"):
        cached(ttl=1, namespace="a:b")
    with pytest.raises(ValueError, match="without ':'"):
        MemoryCache().invalidate_namespace("a:b")


def test_cache_settings_fields() -> None:
    settings = backend_kit.load_settings()
    assert settings.cache_serializer == "json"
    assert settings.cache_signing_key is None
    assert settings.cache_timeout == 0.5
    with pytest.raises(backend_kit.ConfigError, match="CACHE_SIGNING_KEY: required when"):
        backend_kit.load_settings(cache_serializer="pickle")
    with pytest.raises(backend_kit.ConfigError, match="at least 16 characters"):
        backend_kit.load_settings(cache_signing_key="short")
    with pytest.raises(backend_kit.ConfigError, match="CACHE_TIMEOUT"):
        backend_kit.load_settings(cache_timeout=0)
    signed = backend_kit.load_settings(cache_serializer="pickle", cache_signing_key="k" * 32)
    assert "k" * 32 not in repr(signed)


def test_settings_are_read_lazily_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_URL", "memory://")

    @cached(ttl=60)
    def value() -> int:
        return 1

    assert value() == 1  # works without configure()


def _stale_scenario(backend: Any) -> None:
    version = 0
    loads = 0
    gate = threading.Event()

    @cached(ttl=0.3, stale_ttl=30, cache=backend)
    def value() -> int:
        nonlocal loads
        loads += 1
        if loads > 1:
            gate.wait(5)  # the refresh is slow; meanwhile others must not wait
        return version

    assert value() == 0
    version = 1
    time.sleep(0.35)
    results: list[int] = []
    refresher = threading.Thread(target=lambda: results.append(value()))
    refresher.start()
    time.sleep(0.05)
    others = [value() for _ in range(5)]  # served stale at once, while the refresh runs
    gate.set()
    refresher.join(5)
    assert others == [0] * 5
    assert results == [1]
    assert value() == 1
    assert loads == 2
    assert value.cache_info().misses == 1


def test_stale_value_is_served_while_one_caller_refreshes() -> None:
    _stale_scenario(MemoryCache())


def test_stale_ttl_async() -> None:
    loads = 0

    @cached(ttl=0.3, stale_ttl=30)
    async def value() -> int:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return loads

    async def main() -> list[int]:
        first = await value()
        await asyncio.sleep(0.35)
        stale = await asyncio.gather(*(value() for _ in range(5)))
        return [first, *stale, await value()]

    results = asyncio.run(main())
    assert results[0] == 1
    assert sorted(results[1:6]) == [1, 1, 1, 1, 2]  # one task refreshed, four got stale
    assert results[6] == 2
    assert loads == 2


def test_stale_entries_expire_after_ttl_plus_stale_ttl() -> None:
    loads = 0

    @cached(ttl=0.02, stale_ttl=0.03)
    def value() -> int:
        nonlocal loads
        loads += 1
        return loads

    assert value() == 1
    time.sleep(0.1)
    assert value() == 2  # gone entirely: a plain miss


def test_a_miss_seen_before_another_load_stored_does_not_load_again() -> None:
    """The interleaving behind a stampede's rare second load: one thread reads a miss,
    another loads and stores the value and finishes its flight, only then does the first
    thread ask for a flight of its own. It must find the stored value, not load."""
    late_missed = threading.Event()
    leader_done = threading.Event()

    class PausingCache(MemoryCache):
        pause_next_read_of_late = True

        def _read(self, key: str, namespace: str) -> Any:
            value = super()._read(key, namespace)
            if threading.current_thread().name == "late" and self.pause_next_read_of_late:
                self.pause_next_read_of_late = False
                late_missed.set()
                leader_done.wait(10)
            return value

    loads = 0

    @cached(ttl=60, cache=PausingCache())
    def load() -> int:
        nonlocal loads
        loads += 1
        return loads

    results: list[int] = []
    late = threading.Thread(target=lambda: results.append(load()), name="late")
    late.start()
    assert late_missed.wait(10)
    results.append(load())  # the leader: loads and stores while "late" holds its miss
    leader_done.set()
    late.join(10)
    assert (loads, sorted(results)) == (1, [1, 1])


def test_signing_key_fallbacks_are_secrets() -> None:
    settings = backend_kit.load_settings(
        cache_signing_key="k" * 32, cache_signing_key_fallbacks="old-key-number-1,old-key-number-2"
    )
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    assert "old-key-number" not in shown
    revealed = settings.model_dump(context={"reveal_secrets": True})
    assert revealed["cache_signing_key_fallbacks"] == ["old-key-number-1", "old-key-number-2"]
