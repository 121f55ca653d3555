"""`cached`: the decorator that puts a function's results in the cache."""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar, cast

import orjson

from backend_kit import _metric_hooks
from backend_kit._active import active_settings_or_none
from backend_kit._forksafe import reset_in_child

from ._backend import DEFAULT_NAMESPACE, MISS, CacheBackend, check_namespace, check_ttl
from ._default import current_settings, default_cache, switch
from ._flight import BUSY
from ._keys import VALUE_KEY_TYPES, encode_arguments, function_name, hash_encoded, value_key
from ._memory import MemoryCache

__all__ = ["CacheInfo", "CachedFunction", "cached"]

P = ParamSpec("P")
SORT_KEYS = orjson.OPT_SORT_KEYS
R = TypeVar("R")


class CacheInfo(NamedTuple):
    """Counters of one cached function since it was defined (or last cleared)."""

    #: Calls answered from the cache.
    hits: int
    #: Calls that found nothing cached (they either loaded or waited for a load).
    misses: int
    #: Times this process ran the function to fill the cache.
    loads: int
    #: Loads that raised (nothing was cached).
    errors: int
    #: Calls made while the shared cache server was unavailable, answered from this
    #: process's memory tier instead (hits and misses alike).
    fallbacks: int = 0
    #: Values the cache backend refused to read because their signature did not match
    #: (each was a miss), in this process; for Redis, counted across the functions that
    #: share the backend.
    mismatches: int = 0


class CachedFunction(Protocol[P, R]):
    """A function decorated with `cached`: call it as before, plus cache controls."""

    __wrapped__: Callable[P, R]

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> None:
        """Forget the result cached for these arguments."""

    def cache_clear(self) -> None:
        """Forget every result of this function (in every process, for Redis)."""

    def invalidate_namespace(self) -> None:
        """Forget every result in this function's namespace, for all its functions."""

    def cache_info(self) -> CacheInfo:
        """Hits, misses, loads, errors, fallbacks and signature mismatches counted in this
        process."""


# A stale_ttl entry is [_STALE_MARK, fresh_until (epoch seconds), value]: the wall clock,
# because processes sharing Redis compare it.
_STALE_MARK = "~backend_kit.stale"


# What a read found: a value to return, a stale value to return while one caller
# refreshes it, or nothing (load it).
_RETURN, _REFRESH, _LOAD = 0, 1, 2


def _stale_entry(value: Any) -> list[Any] | None:
    if type(value) is list and len(value) == 3 and value[0] == _STALE_MARK:
        return value
    return None  # a miss, or a value written without stale_ttl: load it again


class _Stats:
    # Hits and misses use itertools.count, whose next() is atomic: no lock on the hit path.
    __slots__ = ("__weakref__", "errors", "fallbacks", "hits", "loads", "lock", "misses")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()
        reset_in_child(self)
        _all_stats.add(self)

    def _reset_after_fork(self) -> None:
        self.lock = threading.Lock()

    def reset(self) -> None:
        self.hits, self.misses = itertools.count(), itertools.count()
        self.fallbacks = itertools.count()
        self.loads = self.errors = 0

    def info(self) -> CacheInfo:
        with self.lock:
            return CacheInfo(
                _peek(self.hits),
                _peek(self.misses),
                self.loads,
                self.errors,
                _peek(self.fallbacks),
            )


def _peek(counter: itertools.count[int]) -> int:
    """The next value of *counter*, that is how many times next() was called."""
    return int(repr(counter)[len("count(") : -1])


class _Binding:
    """Finds the backend lazily on first call, and again when the active settings or
    the testing switch change."""

    __slots__ = (
        "__weakref__",
        "backend",
        "explicit",
        "generation",
        "lock",
        "maxsize",
        "memory",
        "settings",
    )

    def __init__(self, explicit: CacheBackend | None, maxsize: int) -> None:
        self.explicit = explicit
        self.maxsize = maxsize
        self.backend: CacheBackend | None = explicit
        self.settings: object = None
        self.generation = -1
        self.memory: MemoryCache | None = None
        # Threads making the first calls together must agree on one backend, or each
        # would have its own single-flight and load separately.
        self.lock = threading.Lock()
        reset_in_child(self)
        _all_bindings.add(self)

    def _reset_after_fork(self) -> None:
        self.lock = threading.Lock()

    def forget(self) -> None:
        """Drop the backend found so far (not one given explicitly) and the memory cache."""
        with self.lock:
            self.backend = self.explicit
            self.settings = None
            self.generation = -1
            self.memory = None

    def get(self) -> CacheBackend:
        backend = self.backend
        if backend is not None and (
            self.explicit is not None
            or (self.settings is active_settings_or_none() and self.generation == switch.generation)
        ):
            return backend
        return self._resolve()

    def _resolve(self) -> CacheBackend:
        with self.lock:
            return self._resolve_locked()

    def _resolve_locked(self) -> CacheBackend:
        settings = current_settings()
        generation = switch.generation
        backend: CacheBackend
        if switch.memory_only or settings.cache_url.scheme == "memory":
            # Each function gets its own memory cache, sized by its own maxsize.
            if self.memory is None or self.generation != generation:
                self.memory = MemoryCache(self.maxsize)
            backend = self.memory
        else:
            backend = default_cache(settings)
        self.settings, self.generation, self.backend = settings, generation, backend
        return backend


# Every cached function's binding and counters, for `forget_cached_functions`.
_all_bindings: weakref.WeakSet[_Binding] = weakref.WeakSet()
_all_stats: weakref.WeakSet[_Stats] = weakref.WeakSet()


def forget_cached_functions() -> None:
    """Every cached function finds its backend again on its next call, with an empty
    memory cache of its own, and its `cache_info` counters start from zero."""
    for binding in list(_all_bindings):
        binding.forget()
    for stats in list(_all_stats):
        with stats.lock:
            stats.reset()


def cached(
    *,
    ttl: float,
    maxsize: int = 1024,
    key: Callable[..., str] | None = None,
    namespace: str | None = None,
    cache: CacheBackend | None = None,
    stale_ttl: float | None = None,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]:
    """Cache the results of a plain or ``async`` function for *ttl* seconds.

    The backend is *cache* if given, else the one ``CACHE_URL`` names, found on the
    first call: ``memory://`` gives each function its own in-process cache of *maxsize*
    entries; ``redis://`` shares one Redis cache between processes. Keys are made of
    *namespace* (default ``"default"``), the function's qualified name and its
    arguments (JSON-encoded; keyword order does not matter), or of what ``key(*args,
    **kwargs)`` returns.

    Concurrent misses on one key run the function once (across processes with Redis);
    the others wait for its result or its exception. An unavailable cache server never
    fails the call: until it answers again, results are cached in this process's memory
    with the same *ttl*, so the function still runs at most once per key per process per
    *ttl* (``cache_info().fallbacks`` counts these calls).

    With *stale_ttl*, a result older than *ttl* is still served for *stale_ttl* more
    seconds while one caller (one per key, across processes with Redis) refreshes it;
    only that caller waits for the function.

    Raises `ValueError` for a bad *ttl*, *stale_ttl*, *maxsize* or *namespace*; a call raises
    `UnencodableArgumentError` when an argument cannot be part of a key, and
    `ReentrantCacheCallError` when the function asks for its own key while loading it.

    Examples:
        >>> from backend_kit import cached
        >>> @cached(ttl=60)
        ... def square(n: int) -> int:
        ...     return n * n
        >>> square(4), square(4), square.cache_info().loads
        (16, 16, 1)
    """
    ttl = check_ttl(ttl)
    if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
        raise ValueError(f"maxsize must be a positive integer, not {maxsize!r}")
    if namespace is not None:
        check_namespace(namespace)
    if key is not None and not callable(key):
        raise TypeError(f"key must be a function returning a string, not {key!r}")
    if cache is not None and not isinstance(cache, CacheBackend):
        raise TypeError(f"cache must be a backend such as MemoryCache or RedisCache, not {cache!r}")
    if stale_ttl is not None:
        stale_ttl = check_ttl(stale_ttl)
    space = namespace or DEFAULT_NAMESPACE
    # Entries of a stale_ttl function live ttl + stale_ttl and carry when they go stale.
    stored_ttl = ttl + (stale_ttl or 0.0)

    def decorate(function: Callable[P, R]) -> CachedFunction[P, R]:
        qualname = function_name(function)
        binding = _Binding(cache, maxsize)
        explicit = cache
        key_prefix = qualname + ":"
        dumps = orjson.dumps
        stats = _Stats()
        value_types = VALUE_KEY_TYPES

        def make_key(backend: CacheBackend, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            """The key of a call in *backend*: a string, or in a `MemoryCache` the
            arguments themselves when they allow it (see `value_key`)."""
            if key is None:
                if type(backend) is MemoryCache:
                    by_value = value_key(space, key_prefix, args, kwargs)
                    if by_value is not None:
                        return by_value
                return key_prefix + encode_arguments(qualname, args, kwargs)
            custom = key(*args, **kwargs)
            if not isinstance(custom, str):
                raise TypeError(
                    f"the key= function given to cached() for {qualname} returned "
                    f"{type(custom).__name__}; it must return a str"
                )
            return key_prefix + custom

        def count_load(failed: bool) -> None:
            with stats.lock:
                stats.loads += 1
                stats.errors += failed
            recorder = _metric_hooks.recorder
            if recorder is not None:
                recorder.cache_event("load", space, qualname)
                if failed:
                    recorder.cache_event("error", space, qualname)

        def observe(kind: str) -> None:
            recorder = _metric_hooks.recorder
            if recorder is not None:
                recorder.cache_event(kind, space, qualname)

        def read_outcome(backend: CacheBackend, value: Any) -> tuple[int, Any]:
            """What a read found, counted: (_RETURN, value), (_REFRESH, stale value)
            or (_LOAD, None). Shared by the sync and async paths."""
            breaker = backend._breaker
            if breaker is not None and breaker.failing:
                next(stats.fallbacks)
                observe("fallback")
            if stale_ttl is None:
                if value is not MISS:
                    next(stats.hits)
                    observe("hit")
                    return _RETURN, value
            else:
                entry = _stale_entry(value)
                if entry is not None:
                    next(stats.hits)
                    observe("hit")
                    if time.time() < entry[1]:
                        return _RETURN, entry[2]
                    return _REFRESH, entry[2]
            next(stats.misses)
            observe("miss")
            return _LOAD, None

        def still_fresh(value: Any) -> list[Any] | None:
            # Another caller may have refreshed the entry since it was read.
            current = _stale_entry(value)
            return current if current is not None and time.time() < current[1] else None

        def stamped(result: Any) -> Any:
            return result if stale_ttl is None else [_STALE_MARK, time.time() + ttl, result]

        def unstamped(loaded: Any) -> Any:
            return loaded if stale_ttl is None else loaded[2]

        # The wrappers below hold the hit path only; a miss goes on in `sync_miss` or
        # `async_miss`, so that a hit does not pay for the cells of their closures.
        if inspect.iscoroutinefunction(function):
            coroutine_function = cast("Callable[P, Awaitable[Any]]", function)

            async def async_miss(
                backend: CacheBackend,
                cache_key: Any,
                value: Any,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                outcome, value = read_outcome(backend, value)
                if outcome == _RETURN:
                    return value
                flight_key = (space, cache_key)

                async def load() -> Any:
                    try:
                        result = await coroutine_function(*args, **kwargs)
                    except Exception:
                        count_load(True)
                        raise
                    count_load(False)
                    return stamped(result)

                if outcome == _REFRESH:

                    async def refresh() -> Any:
                        current = still_fresh(await backend._aread(cache_key, space))
                        if current is not None:
                            return current
                        return await backend._atry_load_shared(cache_key, space, load, stored_ttl)

                    refreshed = await backend._async_flight.try_run(flight_key, refresh)
                    if refreshed is BUSY:
                        observe("stale")  # another caller is refreshing it
                        return value
                    return refreshed[2]
                loaded = await backend._async_flight.run(
                    flight_key, lambda: backend._aload_shared(cache_key, space, load, stored_ttl)
                )
                return unstamped(loaded)

            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                backend = binding.backend
                if backend is None or (
                    explicit is None
                    and (
                        binding.settings is not active_settings_or_none()
                        or binding.generation != switch.generation
                    )
                ):
                    backend = binding.get()
                cache_key = make_key(backend, args, kwargs)
                if type(backend) is MemoryCache:
                    value = backend._read(cache_key, space)  # never waits: no coroutine
                else:
                    value = await backend._aread(cache_key, space)
                if value is not MISS and stale_ttl is None:
                    breaker = backend._breaker
                    if breaker is None or not breaker.failing:
                        next(stats.hits)  # read_outcome's first answer, inlined for the hit
                        if _metric_hooks.recorder is not None:
                            observe("hit")
                        return value
                return await async_miss(backend, cache_key, value, args, kwargs)

            wrapper: Callable[..., Any] = async_wrapper
        else:

            def sync_miss(
                backend: CacheBackend,
                cache_key: Any,
                value: Any,
                args: tuple[Any, ...],
                kwargs: dict[str, Any],
            ) -> Any:
                outcome, value = read_outcome(backend, value)
                if outcome == _RETURN:
                    return value
                flight_key = (space, cache_key)

                def load() -> Any:
                    try:
                        result = function(*args, **kwargs)
                    except Exception:
                        count_load(True)
                        raise
                    count_load(False)
                    return stamped(result)

                if outcome == _REFRESH:

                    def refresh() -> Any:
                        current = still_fresh(backend._read(cache_key, space))
                        if current is not None:
                            return current
                        return backend._try_load_shared(cache_key, space, load, stored_ttl)

                    refreshed = backend._flight.try_run(flight_key, refresh)
                    if refreshed is BUSY:
                        observe("stale")  # another caller is refreshing it
                        return value
                    return refreshed[2]
                loaded = backend._flight.run(
                    flight_key, lambda: backend._load_shared(cache_key, space, load, stored_ttl)
                )
                return unstamped(loaded)

            def sync_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                backend = binding.backend
                if backend is None or (
                    explicit is None
                    and (
                        binding.settings is not active_settings_or_none()
                        or binding.generation != switch.generation
                    )
                ):
                    backend = binding.get()
                cache_key: Any = None
                if key is not None:
                    cache_key = make_key(backend, args, kwargs)
                elif type(backend) is MemoryCache:
                    if not kwargs:
                        for arg in args:
                            if type(arg) not in value_types:
                                break
                        else:
                            # value_key and MemoryCache._read, inlined: a memory hit
                            # encodes nothing, as with cachetools.cached.
                            cache_key = (space, key_prefix, args)
                            try:
                                with backend._lock:
                                    value = backend._entries[cache_key][0]
                            except KeyError:
                                value = MISS
                            if value is not MISS and stale_ttl is None:
                                next(stats.hits)  # read_outcome's first answer, inlined
                                if _metric_hooks.recorder is not None:
                                    observe("hit")
                                return value
                            return sync_miss(backend, cache_key, value, args, kwargs)
                    cache_key = value_key(space, key_prefix, args, kwargs)
                if cache_key is None:
                    # encode_arguments, inlined: the JSON key, which a shared backend
                    # needs, and a memory one for arguments not keyed by value.
                    try:
                        encoded = dumps(
                            {"a": args, "k": kwargs} if kwargs else args, option=SORT_KEYS
                        )
                    except TypeError:
                        encode_arguments(qualname, args, kwargs)  # raises the clear error
                        raise
                    if len(encoded) <= 64:
                        cache_key = key_prefix + encoded.decode()
                    else:
                        cache_key = key_prefix + hash_encoded(encoded)
                value = backend._read(cache_key, space)
                if value is not MISS and stale_ttl is None:
                    breaker = backend._breaker
                    if breaker is None or not breaker.failing:
                        next(stats.hits)  # read_outcome's first answer, inlined for the hit
                        if _metric_hooks.recorder is not None:
                            observe("hit")
                        return value
                return sync_miss(backend, cache_key, value, args, kwargs)

            wrapper = sync_wrapper

        def invalidate(*args: Any, **kwargs: Any) -> None:
            backend = binding.get()
            backend._remove(make_key(backend, args, kwargs), space)

        def cache_clear() -> None:
            binding.get()._remove_prefix(qualname + ":", space)
            with stats.lock:
                stats.reset()

        def invalidate_namespace() -> None:
            binding.get().invalidate_namespace(space)

        def cache_info() -> CacheInfo:
            mismatches = getattr(binding.get(), "signature_mismatches", 0)
            return stats.info()._replace(mismatches=mismatches)

        functools.update_wrapper(wrapper, function)
        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        wrapper.cache_clear = cache_clear  # type: ignore[attr-defined]
        wrapper.invalidate_namespace = invalidate_namespace  # type: ignore[attr-defined]
        wrapper.cache_info = cache_info  # type: ignore[attr-defined]
        return cast("CachedFunction[P, R]", wrapper)

    return decorate
