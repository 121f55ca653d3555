"""What every cache backend offers, and the single-flight logic they share."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from ._flight import AsyncSingleFlight, SingleFlight

if TYPE_CHECKING:
    from ._breaker import CircuitBreaker

__all__ = ["DEFAULT_NAMESPACE", "MISS", "CacheBackend"]

T = TypeVar("T")

#: The namespace of keys written without one.
DEFAULT_NAMESPACE: Final = "default"


class _Miss:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<cache miss>"


#: Returned by the low-level reads on a miss (``None`` is a value that can be cached).
MISS: Final[Any] = _Miss()


def check_ttl(ttl: float) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"ttl must be a number of seconds greater than 0, not {ttl!r}")
    return float(ttl)


def check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not namespace or ":" in namespace:
        raise ValueError(f"namespace must be a non-empty string without ':', not {namespace!r}")
    return namespace


class CacheBackend(ABC):
    """A cache: `get`, `set`, `delete`, `clear`, `get_or_set` and `invalidate_namespace`.

    Keys are strings inside a namespace (default ``"default"``). Backends never raise
    their server's errors to the caller: while the server fails, reads, writes and loads
    use a per-process memory tier instead, and the failure is logged (see
    `CircuitBreaker`).
    ``get_or_set`` is single-flight: concurrent misses on one key in this process run
    the loader once (and, for `RedisCache`, once across processes).
    """

    #: The breaker of a backend that can be unavailable (None: always available).
    _breaker: CircuitBreaker | None = None

    def __init__(self) -> None:
        self._flight = SingleFlight()
        self._async_flight = AsyncSingleFlight()

    # -- primitives each backend implements --------------------------------------------

    @abstractmethod
    def _read(self, key: str, namespace: str) -> Any:
        """The value, or `MISS`. Never raises the server's errors."""

    @abstractmethod
    def _write(self, key: str, namespace: str, value: Any, ttl: float) -> None:
        """Store *value*. Never raises the server's errors."""

    @abstractmethod
    def _remove(self, key: str, namespace: str) -> None:
        """Forget *key*. Never raises the server's errors."""

    @abstractmethod
    def _remove_prefix(self, key_prefix: str, namespace: str) -> None:
        """Forget every key of *namespace* that starts with *key_prefix*."""

    @abstractmethod
    def _load_shared(self, key: str, namespace: str, loader: Callable[[], T], ttl: float) -> T:
        """Called by the one thread of this process that loads *key*: load it (once
        across processes where the backend is shared), store it, return it."""

    @abstractmethod
    async def _aload_shared(
        self, key: str, namespace: str, loader: Callable[[], Awaitable[T]], ttl: float
    ) -> T:
        """The same as `_load_shared`, for a coroutine loader."""

    async def _aread(self, key: str, namespace: str) -> Any:
        return self._read(key, namespace)

    def _try_load_shared(self, key: str, namespace: str, loader: Callable[[], T], ttl: float) -> T:
        """`_load_shared` for a refresh: returns `BUSY` instead of waiting when another
        process is already loading *key*. Only shared backends can be busy."""
        return self._load_shared(key, namespace, loader, ttl)

    async def _atry_load_shared(
        self, key: str, namespace: str, loader: Callable[[], Awaitable[T]], ttl: float
    ) -> T:
        return await self._aload_shared(key, namespace, loader, ttl)

    # -- public API ------------------------------------------------------------------

    def get(self, key: str, default: Any = None, *, namespace: str = DEFAULT_NAMESPACE) -> Any:
        """The value cached under *key*, or *default* when there is none (or the cache
        server is unavailable)."""
        value = self._read(key, namespace)
        return default if value is MISS else value

    def set(self, key: str, value: Any, *, ttl: float, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Cache *value* under *key* for *ttl* seconds.

        Raises `TypeError` when the backend cannot store the value (a non-JSON value
        with the JSON serializer); a server outage is logged, not raised.
        """
        self._write(key, namespace, value, check_ttl(ttl))

    def delete(self, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> None:
        """Forget *key* (no error when it is not cached)."""
        self._remove(key, namespace)

    def check(self) -> None:
        """Write, read back and delete a probe value, bypassing the fallbacks: for
        health checks. Returns quietly when the cache works; raises the server's own
        error (for example ``redis.ConnectionError``) or `RuntimeError` when the value
        read back differs. Its message may name the server's address."""
        probe = f"probe:{uuid.uuid4().hex}"
        self._check_round_trip(probe, ["backend_kit", probe])

    def _check_round_trip(self, key: str, value: Any) -> None:
        self._write(key, "#health", value, 10.0)
        read = self._read(key, "#health")
        self._remove(key, "#health")
        if read != value:
            raise RuntimeError("the cache did not return the value just written to it")

    @abstractmethod
    def clear(self) -> None:
        """Forget every key this backend wrote, in every namespace."""

    @abstractmethod
    def invalidate_namespace(self, namespace: str) -> None:
        """Make every key of *namespace* a miss from now on, at once, in every process
        sharing this cache (the namespace's version is bumped; old entries expire)."""

    def get_or_set(
        self,
        key: str,
        loader: Callable[[], T],
        *,
        ttl: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> T:
        """The value cached under *key*; on a miss, ``loader()`` is called once (however
        many threads miss together), its result cached for *ttl* seconds and returned.

        Raises what *loader* raises (to every caller that waited for it; nothing is
        cached), and `ReentrantCacheCallError` when *loader* asks for the same key.

        Examples:
            >>> from backend_kit import MemoryCache
            >>> MemoryCache().get_or_set("answer", lambda: 42, ttl=60)
            42
        """
        ttl = check_ttl(ttl)
        value = self._read(key, namespace)
        if value is not MISS:
            return cast("T", value)
        return self._flight.run(
            (namespace, key), lambda: self._load_shared(key, namespace, loader, ttl)
        )

    async def aget_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[T]],
        *,
        ttl: float,
        namespace: str = DEFAULT_NAMESPACE,
    ) -> T:
        """`get_or_set` for a coroutine *loader*: concurrent tasks share one load."""
        ttl = check_ttl(ttl)
        value = await self._aread(key, namespace)
        if value is not MISS:
            return cast("T", value)
        return await self._async_flight.run(
            (namespace, key), lambda: self._aload_shared(key, namespace, loader, ttl)
        )
