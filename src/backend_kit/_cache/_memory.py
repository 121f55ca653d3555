"""The in-process cache: a cachetools TLRU cache behind a lock."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

from cachetools import TLRUCache

from backend_kit._forksafe import after_fork_in_child

from ._backend import MISS, CacheBackend, check_namespace

__all__ = ["MemoryCache"]

T = TypeVar("T")
#: A key: a string, or a `value_key` tuple from `cached`.
Key: TypeAlias = "str | tuple[Any, ...]"

# Invalidating a namespace reaches every memory cache of the process (each cached
# function has its own). The version fences loads that were running meanwhile.
_registry_lock = threading.Lock()
_instances: weakref.WeakSet[MemoryCache] = weakref.WeakSet()
_namespace_versions: dict[str, int] = {}


def _expires(_slot: tuple[Any, ...], entry: tuple[Any, float], now: float) -> float:
    return now + entry[1]


class MemoryCache(CacheBackend):
    """A thread-safe in-process cache holding at most *maxsize* entries, each expiring
    after its own ttl (least recently used entries are evicted first).

    Values are stored as they are (not copied): do not mutate a cached value.

    Examples:
        >>> cache = MemoryCache(maxsize=100)
        >>> cache.set("user:1", {"name": "Ada"}, ttl=30)
        >>> cache.get("user:1")
        {'name': 'Ada'}
    """

    def __init__(self, maxsize: int = 1024) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be a positive integer, not {maxsize!r}")
        super().__init__()
        self.maxsize = maxsize
        self._lock = threading.Lock()
        # A string key's slot is (namespace, key); a `value_key` tuple, which `cached`
        # uses for arguments such as ints and strings, is its own slot:
        # (namespace, key prefix, arguments[, keyword items]).
        self._entries: TLRUCache[tuple[Any, ...], tuple[Any, float]] = TLRUCache(
            maxsize, ttu=_expires, timer=time.monotonic
        )
        with _registry_lock:
            _instances.add(self)

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryCache(maxsize={self.maxsize})"

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)

    # `cached` inlines this read for a hit keyed by value: keep the two alike.
    def _read(self, key: Key, namespace: str) -> Any:
        slot = key if key.__class__ is tuple else (namespace, key)
        try:
            with self._lock:
                # Indexing, not .get(): get() checks expiry twice (contains, then getitem).
                return self._entries[slot][0]
        except KeyError:
            return MISS

    def _write(self, key: Key, namespace: str, value: Any, ttl: float) -> None:
        slot = key if key.__class__ is tuple else (namespace, key)
        with self._lock:
            self._entries[slot] = (value, ttl)

    def _remove(self, key: Key, namespace: str) -> None:
        slot = key if key.__class__ is tuple else (namespace, key)
        with self._lock:
            self._entries.pop(slot, None)

    def _remove_where(self, matches: Callable[[tuple[Any, ...]], bool]) -> None:
        with self._lock:
            for slot in [slot for slot in self._entries if matches(slot)]:
                self._entries.pop(slot, None)

    def _remove_prefix(self, key_prefix: str, namespace: str) -> None:
        # Both kinds of slot have the namespace first and a string starting with the
        # function's key prefix second.
        self._remove_where(lambda slot: slot[0] == namespace and slot[1].startswith(key_prefix))

    def _store_unless_invalidated(
        self, key: Key, namespace: str, value: Any, ttl: float, version: int
    ) -> None:
        with _registry_lock:
            if _namespace_versions.get(namespace, 0) == version:
                self._write(key, namespace, value, ttl)

    def _load_shared(self, key: Key, namespace: str, loader: Callable[[], T], ttl: float) -> T:
        # The caller saw a miss, but another flight may have stored the value since then
        # and finished: loading again would run the function twice.
        stored = self._read(key, namespace)
        if stored is not MISS:
            return stored  # type: ignore[no-any-return]
        return self._try_load_shared(key, namespace, loader, ttl)

    def _try_load_shared(self, key: Key, namespace: str, loader: Callable[[], T], ttl: float) -> T:
        version = _namespace_versions.get(namespace, 0)
        value = loader()
        self._store_unless_invalidated(key, namespace, value, ttl, version)
        return value

    async def _aload_shared(
        self, key: Key, namespace: str, loader: Callable[[], Awaitable[T]], ttl: float
    ) -> T:
        stored = self._read(key, namespace)
        if stored is not MISS:
            return stored  # type: ignore[no-any-return]
        return await self._atry_load_shared(key, namespace, loader, ttl)

    async def _atry_load_shared(
        self, key: Key, namespace: str, loader: Callable[[], Awaitable[T]], ttl: float
    ) -> T:
        version = _namespace_versions.get(namespace, 0)
        value = await loader()
        self._store_unless_invalidated(key, namespace, value, ttl, version)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def invalidate_namespace(self, namespace: str) -> None:
        """Forget every key of *namespace* in every memory cache of this process."""
        check_namespace(namespace)
        with _registry_lock:
            _namespace_versions[namespace] = _namespace_versions.get(namespace, 0) + 1
            caches = list(_instances)
        for cache in caches:
            cache._remove_where(lambda slot: slot[0] == namespace)


@after_fork_in_child
def _reset_after_fork() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for cache in list(_instances):
        cache._reset_after_fork()


def forget_namespace_versions() -> None:
    """Forget every namespace's invalidation count (each starts again from zero)."""
    with _registry_lock:
        _namespace_versions.clear()
