"""The in-process cache: a cachetools TLRU cache behind a lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from cachetools import TLRUCache

from ._backend import MISS, CacheBackend, check_namespace

__all__ = ["MemoryCache"]

T = TypeVar("T")

# Namespace versions are process-wide, so invalidating a namespace reaches every memory
# cache (each cached function has its own) at once.
_versions_lock = threading.Lock()
_namespace_versions: dict[str, int] = {}


def _expires(_key: Hashable, entry: tuple[Any, float], now: float) -> float:
    return now + entry[1]


class MemoryCache(CacheBackend):
    """A thread-safe in-process cache holding at most *maxsize* entries, each expiring
    after its own ttl (least recently used entries are evicted first).

    Values are stored as they are (not copied): do not mutate a cached value.

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
        self._entries: TLRUCache[tuple[str, int, str], tuple[Any, float]] = TLRUCache(
            maxsize, ttu=_expires, timer=time.monotonic
        )

    def __repr__(self) -> str:
        return f"MemoryCache(maxsize={self.maxsize})"

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)

    def _read(
        self, key: str, namespace: str, _versions: dict[str, int] = _namespace_versions
    ) -> Any:
        slot = (namespace, _versions.get(namespace, 0), key)
        try:
            with self._lock:
                # Indexing, not .get(): get() checks expiry twice (contains, then getitem).
                return self._entries[slot][0]
        except KeyError:
            return MISS

    def _write(self, key: str, namespace: str, value: Any, ttl: float) -> None:
        slot = (namespace, _namespace_versions.get(namespace, 0), key)
        with self._lock:
            self._entries[slot] = (value, ttl)

    def _remove(self, key: str, namespace: str) -> None:
        slot = (namespace, _namespace_versions.get(namespace, 0), key)
        with self._lock:
            self._entries.pop(slot, None)

    def _remove_prefix(self, key_prefix: str, namespace: str) -> None:
        with self._lock:
            for slot in [
                s for s in self._entries if s[0] == namespace and s[2].startswith(key_prefix)
            ]:
                self._entries.pop(slot, None)

    def _load_shared(self, key: str, namespace: str, loader: Callable[[], T], ttl: float) -> T:
        value = loader()
        self._write(key, namespace, value, ttl)
        return value

    async def _aload_shared(
        self, key: str, namespace: str, loader: Callable[[], Awaitable[T]], ttl: float
    ) -> T:
        value = await loader()
        self._write(key, namespace, value, ttl)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def invalidate_namespace(self, namespace: str) -> None:
        check_namespace(namespace)
        with _versions_lock:
            _namespace_versions[namespace] = _namespace_versions.get(namespace, 0) + 1
