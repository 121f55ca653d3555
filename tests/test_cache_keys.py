"""Which calls share a cache entry: the memory backend's keys made of the arguments
themselves against the JSON keys Redis uses."""

from __future__ import annotations

import asyncio
import datetime
import enum
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend_kit import CacheBackend, MemoryCache, RedisCache, cached
from backend_kit._cache._keys import encode_arguments, value_key


class Level(enum.IntEnum):
    ONE = 1


class Colour(str, enum.Enum):
    RED = "red"


class Plain(enum.Enum):
    TWO = 2


ID = uuid.UUID(int=7)
WHEN = datetime.datetime(2026, 1, 2, 3, 4, 5)

# Calls whose arguments are equal in Python, or encode alike in JSON, or neither: each
# group lists calls that share one entry (their JSON keys are equal), and no two groups
# share one.
GROUPS: list[list[tuple[tuple[Any, ...], dict[str, Any]]]] = [
    [((1,), {}), ((Level.ONE,), {})],
    [((1.0,), {})],
    [((True,), {})],
    [(("1",), {})],
    [((None,), {})],
    [((2,), {}), ((Plain.TWO,), {})],
    [(("red",), {}), ((Colour.RED,), {})],
    [((str(ID),), {}), ((ID,), {})],
    [((WHEN.isoformat(),), {}), ((WHEN,), {})],
    [(([1, 2],), {}), (((1, 2),), {})],
    [(({"a": 1, "b": 2},), {}), (({"b": 2, "a": 1},), {})],
    [((), {"a": 1, "b": "x"}), ((), {"b": "x", "a": Level.ONE})],
    [((1,), {"b": 2})],
    [(([1], {"b": 2}), {})],
    [((1, "a", None), {})],
]


def _run_groups(function: Any) -> None:
    for group in GROUPS:
        for args, kwargs in group:
            function(*args, **kwargs)


def _calls_by_key(cache: CacheBackend) -> tuple[list[int], Any]:
    """Loads of a function making every call of GROUPS twice, and its counters."""
    loads: list[int] = []

    @cached(ttl=60, cache=cache)
    def echo(*args: Any, **kwargs: Any) -> int:
        loads.append(1)
        return len(loads)

    _run_groups(echo)
    _run_groups(echo)
    return loads, echo.cache_info()


def test_memory_calls_share_an_entry_exactly_when_their_json_keys_are_equal() -> None:
    loads: list[tuple[Any, ...]] = []

    @cached(ttl=60, cache=MemoryCache())
    def echo(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
        loads.append((args, kwargs))
        return (args, kwargs)

    for _ in range(2):
        for group in GROUPS:
            first = echo(*group[0][0], **group[0][1])
            assert first == (group[0][0], group[0][1])
            for args, kwargs in group[1:]:
                assert echo(*args, **kwargs) is first  # the first call's entry
    assert loads == [(group[0][0], group[0][1]) for group in GROUPS]
    calls = sum(len(group) for group in GROUPS)
    assert echo.cache_info()[:4] == (2 * calls - len(GROUPS), len(GROUPS), len(GROUPS), 0)


@pytest.mark.redis
def test_memory_and_redis_hit_and_miss_on_the_same_calls(redis_url: str) -> None:
    redis_cache = RedisCache(redis_url, prefix=f"bk-test-{uuid.uuid4().hex[:12]}:")
    try:
        on_redis = _calls_by_key(redis_cache)
    finally:
        redis_cache.clear()
        redis_cache.close()
    assert _calls_by_key(MemoryCache()) == on_redis
    assert len(on_redis[0]) == len(GROUPS)


_SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 2, -1, 1.0, 0.0, -0.0, 2.0, True, False, None, "", "1", "red"]),
    st.sampled_from([Level.ONE, Colour.RED, Plain.TWO, ID, str(ID), WHEN, WHEN.isoformat()]),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner), max_leaves=4
)
_CALLS = st.tuples(
    st.lists(_VALUES, max_size=3).map(tuple),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), _VALUES, max_size=2),
)


def _memory_key(call: tuple[tuple[Any, ...], dict[str, Any]]) -> Any:
    """The key `cached` gives a call in a MemoryCache."""
    args, kwargs = call
    by_value = value_key("default", "m.f:", args, kwargs)
    return by_value if by_value is not None else "m.f:" + encode_arguments("m.f", args, kwargs)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_CALLS, _CALLS)
def test_memory_keys_are_equal_exactly_when_json_keys_are(
    first: tuple[tuple[Any, ...], dict[str, Any]], second: tuple[tuple[Any, ...], dict[str, Any]]
) -> None:
    same_json = encode_arguments("m.f", *first) == encode_arguments("m.f", *second)
    assert (_memory_key(first) == _memory_key(second)) is same_json
    assert (_memory_key(first) == _memory_key(first)) is True


def _json_twin(value: Any) -> Any:
    """Another value with the same JSON: lists and tuples swapped, enums, UUIDs and
    datetimes as their JSON value."""
    if isinstance(value, (list, tuple)):
        items = [_json_twin(item) for item in value]
        return tuple(items) if isinstance(value, list) else items
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (uuid.UUID, datetime.datetime)):
        return str(value) if isinstance(value, uuid.UUID) else value.isoformat()
    return value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_CALLS)
def test_calls_with_equal_json_keys_share_a_memory_key(
    call: tuple[tuple[Any, ...], dict[str, Any]],
) -> None:
    args, kwargs = call
    twin = (
        tuple(_json_twin(arg) for arg in args),
        {name: _json_twin(arg) for name, arg in kwargs.items()},
    )
    assert encode_arguments("m.f", *twin) == encode_arguments("m.f", *call)
    assert _memory_key(twin) == _memory_key(call)


def test_unhashable_and_unusual_arguments_are_cached_and_invalidated() -> None:
    loads: list[Any] = []

    @cached(ttl=60, cache=MemoryCache())
    def echo(value: Any, *, flag: Any = None) -> int:
        loads.append(value)
        return len(loads)

    for value in ([1, [2]], {"a": [1]}, 1.5, ID, Level.ONE):
        first = echo(value)
        assert echo(value) == first
        echo.invalidate(value)
        assert echo(value) == first + 1
    assert echo(1, flag=[1]) == echo(1, flag=[1])
    assert echo.cache_info()[:3] == (6, 11, 11)


def test_invalidate_reaches_the_entry_of_an_equal_json_key() -> None:
    loads: list[Any] = []

    @cached(ttl=60, cache=MemoryCache())
    def echo(value: Any) -> int:
        loads.append(value)
        return len(loads)

    assert echo(1) == 1
    echo.invalidate(Level.ONE)  # 1 and Level.ONE are one key, as in JSON
    assert echo(1) == 2
    echo.invalidate(1.0)  # a different key: nothing to forget
    assert echo(Level.ONE) == 2


def test_clear_and_namespaces_reach_value_keys_of_a_shared_memory_cache() -> None:
    shared = MemoryCache()
    loads: list[str] = []

    def counting(name: str, namespace: str) -> Callable[..., int]:
        def load(*args: Any, **kwargs: Any) -> int:
            loads.append(name)
            return len(loads)

        load.__qualname__ = f"load_{name}"  # each its own function name in the keys
        return cached(ttl=60, cache=shared, namespace=namespace)(load)

    first, second, other = counting("a", "users"), counting("b", "users"), counting("c", "misc")

    def fill() -> None:
        for function in (first, second, other):
            function(1)
            function("x", k=2)
            function([1])  # a JSON key

    fill()
    assert len(shared) == 9
    first.cache_clear()
    assert len(shared) == 6
    fill()
    assert (loads.count("a"), loads.count("b")) == (6, 3)
    shared.invalidate_namespace("users")
    assert len(shared) == 3  # only the "misc" function's entries are left
    fill()
    assert (loads.count("a"), loads.count("b"), loads.count("c")) == (9, 6, 3)


def test_an_unencodable_argument_still_raises_on_the_memory_backend() -> None:
    from backend_kit import UnencodableArgumentError

    @cached(ttl=60, cache=MemoryCache())
    def echo(value: Any) -> Any:
        return value

    for value in (object(), [object()], {1: object()}):
        with pytest.raises(UnencodableArgumentError, match="key="):
            echo(value)
    # What JSON refuses but a memory key holds: an int beyond 64 bits.
    assert echo(2**70) == 2**70
    assert echo.cache_info().loads == 1


def test_threads_hitting_and_missing_value_keys_load_each_key_once() -> None:
    loads: list[int] = []
    lock = threading.Lock()

    @cached(ttl=60, cache=MemoryCache(maxsize=64))
    def double(n: int) -> int:
        with lock:
            loads.append(n)
        return 2 * n

    barrier = threading.Barrier(8)
    results: list[list[int]] = [[] for _ in range(8)]

    def work(index: int) -> None:
        barrier.wait()
        for round_ in range(50):
            n = (round_ + index) % 20
            results[index].append(double(n) - 2 * n)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [sum(map(abs, each)) for each in results] == [0] * 8
    assert sorted(loads) == list(range(20))
    info = double.cache_info()
    assert (info.hits + info.misses, info.loads) == (400, 20)


def test_async_functions_share_entries_as_sync_ones_do() -> None:
    loads: list[int] = []

    @cached(ttl=60, cache=MemoryCache())
    async def echo(*args: Any, **kwargs: Any) -> int:
        loads.append(1)
        return len(loads)

    async def run() -> list[int]:
        return [
            await echo(*args, **kwargs)
            for _ in range(2)
            for group in GROUPS
            for args, kwargs in group
        ]

    results = asyncio.run(run())
    assert len(loads) == len(GROUPS)
    assert results[: len(results) // 2] == results[len(results) // 2 :]
    echo.invalidate(Level.ONE)
    assert asyncio.run(echo(1)) == len(GROUPS) + 1
