"""The shared cache: Redis through redis-py, single-flight across processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import structlog

from backend_kit._redact import mask_url

from ._backend import MISS, CacheBackend, check_namespace
from ._breaker import CircuitBreaker
from ._flight import BUSY
from ._serialize import SignatureMismatch, ValueCodec

if TYPE_CHECKING:
    import redis

__all__ = ["RedisCache"]

T = TypeVar("T")
logger = structlog.get_logger("backend_kit.cache")

# Deletes the lock only if it still holds our token: a holder whose lock expired must not
# release the lock that a waiter took over since.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Stores a loaded value only if its namespace was not invalidated while it was loading.
_SET_IF_VERSION = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then return 0 end
return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
"""
_ARGUMENTS = re.compile(r":(?=[\[{#])")
_FIRST_POLL = 0.005
_MAX_POLL = 0.05


def _install_hint() -> ImportError:
    return ImportError(
        'the Redis cache needs redis-py: pip install "backend-kit[redis]" '
        "(or set CACHE_URL=memory:// for an in-process cache)"
    )


class _Failed(Exception):
    """The server failed; the breaker has been told. The caller falls back."""


class RedisCache(CacheBackend):
    """A cache in Redis shared by every process that uses the same *url* and *prefix*.

    The client is pooled (up to *max_connections*) and always has connect and read
    timeouts (*timeout* seconds), and does not retry by itself. Values are JSON unless
    *serializer* is ``"pickle"``, which requires a *signing_key*. A miss that several
    processes hit together is loaded by one of them under a Redis lock (``SET NX PX``);
    the others poll for the value, and take over if the lock expires after *lock_ttl*
    seconds because its holder died.

    When Redis fails, reads are misses and writes are skipped; after *failure_threshold*
    consecutive failures Redis is not contacted for *cooldown* seconds, and one warning
    is logged per *warn_interval* seconds.

    Examples:
        >>> cache = RedisCache("redis://127.0.0.1:6379/0", prefix="doc:")  # doctest: +SKIP
        >>> cache.get_or_set("greeting", lambda: "hello", ttl=60)  # doctest: +SKIP
        'hello'
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "backend_kit:",
        serializer: Literal["json", "pickle"] = "json",
        signing_key: str | None = None,
        signing_key_fallbacks: Sequence[str] = (),
        timeout: float = 0.5,
        max_connections: int = 64,
        lock_ttl: float = 30.0,
        failure_threshold: int = 3,
        cooldown: float = 10.0,
        warn_interval: float = 60.0,
    ) -> None:
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:  # pragma: no cover - exercised only without the extra
            raise _install_hint() from None
        if not timeout > 0 or not lock_ttl > 0:
            raise ValueError("timeout and lock_ttl must be greater than 0 seconds")
        super().__init__()
        self.prefix = prefix
        self.lock_ttl = lock_ttl
        self._codec = ValueCodec(serializer, signing_key, signing_key_fallbacks)
        self._mismatches = _MismatchLog(warn_interval)
        self._display_url = mask_url(url)
        self._client: redis.Redis = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            max_connections=max_connections,
            # Our fallback and circuit breaker handle failures; retrying inside the client
            # would multiply every timeout.
            retry=Retry(NoBackoff(), 0),
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._release = self._client.register_script(_RELEASE)
        self._set_if_version = self._client.register_script(_SET_IF_VERSION)
        self.breaker = CircuitBreaker(
            backend=f"redis {self._display_url}",
            threshold=failure_threshold,
            cooldown=cooldown,
            warn_interval=warn_interval,
        )

    def __repr__(self) -> str:
        return f"RedisCache({self._display_url!r}, prefix={self.prefix!r})"

    @property
    def client(self) -> redis.Redis:
        """The underlying redis-py client (pooled, with timeouts)."""
        return self._client

    # -- keys --------------------------------------------------------------------------

    def _key(self, namespace: str, key: str) -> str:
        return f"{self.prefix}{namespace}:{key}"

    def _version_key(self, namespace: str) -> str:
        return f"{self.prefix}#version:{namespace}"

    def _lock_key(self, full_key: str) -> str:
        return f"{self.prefix}#lock:{full_key}"

    # -- talking to Redis, never raising its errors -------------------------------------

    def _call(self, operation: Callable[[], T]) -> T:
        """Run *operation* against Redis; raises `_Failed` when skipped or failing."""
        if not self.breaker.allow():
            raise _Failed
        try:
            result = operation()
        except self._errors as exc:
            self.breaker.failure(exc)
            raise _Failed from None
        self.breaker.success()
        return result

    def _decode(self, full_key: str, raw: bytes | None) -> Any:
        if raw is None:
            return MISS
        try:
            value, signed_with_fallback = self._codec.loads_checked(full_key, raw)
        except SignatureMismatch as exc:
            self._mismatches.record(full_key, str(exc))
            return MISS
        if signed_with_fallback:
            # Signed with a key being rotated out: sign it again with the current key,
            # keeping its expiry, unless it changed in the meantime.
            data = self._codec.dumps(full_key, value)
            with contextlib.suppress(_Failed):
                self._call(lambda: self._client.set(full_key, data, keepttl=True, xx=True))
        return value

    @property
    def signature_mismatches(self) -> int:
        """Values read from Redis and refused (treated as misses) in this process."""
        return self._mismatches.count

    def _read(self, key: str, namespace: str) -> Any:
        # A hit is one GET: namespace invalidation deletes keys rather than making every
        # read also fetch the namespace's version.
        if not self.breaker.allow():
            return MISS
        full_key = f"{self.prefix}{namespace}:{key}"
        try:
            raw = self._client.get(full_key)
        except self._errors as exc:
            self.breaker.failure(exc)
            return MISS
        self.breaker.success()
        # The client is created without decode_responses, so replies are bytes.
        return self._decode(full_key, cast("bytes | None", raw))

    async def _aread(self, key: str, namespace: str) -> Any:
        return await asyncio.to_thread(self._read, key, namespace)

    def _write(self, key: str, namespace: str, value: Any, ttl: float) -> None:
        full_key = self._key(namespace, key)
        data = self._codec.dumps(full_key, value)
        with contextlib.suppress(_Failed):
            self._call(lambda: self._client.set(full_key, data, px=int(ttl * 1000)))

    def _remove(self, key: str, namespace: str) -> None:
        with contextlib.suppress(_Failed):
            self._call(lambda: self._client.delete(self._key(namespace, key)))

    def _remove_matching(self, pattern: str) -> None:
        def remove() -> None:
            batch: list[bytes] = []
            for found in self._client.scan_iter(match=pattern, count=500):
                batch.append(found)
                if len(batch) >= 500:
                    self._client.unlink(*batch)
                    batch.clear()
            if batch:
                self._client.unlink(*batch)

        with contextlib.suppress(_Failed):
            self._call(remove)

    def _remove_prefix(self, key_prefix: str, namespace: str) -> None:
        self._remove_matching(_glob_escape(self._key(namespace, key_prefix)) + "*")

    def clear(self) -> None:
        """Delete every key under this cache's prefix (values, versions and locks)."""
        self._remove_matching(_glob_escape(self.prefix) + "*")

    def invalidate_namespace(self, namespace: str) -> None:
        """Delete every key of *namespace* (a SCAN over this cache's keys). The
        namespace's version is bumped first, so a load that started before this call
        does not store its possibly outdated value afterwards."""
        check_namespace(namespace)
        with contextlib.suppress(_Failed):
            self._call(lambda: self._client.incr(self._version_key(namespace)))
            self._remove_matching(_glob_escape(self._key(namespace, "")) + "*")

    # -- single flight across processes ----------------------------------------------

    def _claim(self, full_key: str, namespace: str, token: str) -> tuple[Any, bytes, bool]:
        """Either the value (someone loaded it), or whether we now hold the load lock.

        The lock is taken before the value is read, in one round trip: a holder stores
        its value before releasing the lock, so whoever gets the lock next sees it.
        """

        def claim() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.set(self._lock_key(full_key), token, nx=True, px=int(self.lock_ttl * 1000))
            pipe.mget(full_key, self._version_key(namespace))
            return pipe.execute()

        acquired, (raw, version) = self._call(claim)
        value = self._decode(full_key, raw)
        if value is not MISS:
            if acquired:
                self._release_quietly(full_key, token)
            return value, b"", False
        return MISS, version or b"0", bool(acquired)

    def _store_and_release(
        self, full_key: str, namespace: str, version: bytes, value: Any, ttl: float, token: str
    ) -> None:
        data = self._codec.dumps(full_key, value)

        def store() -> None:
            pipe = self._client.pipeline(transaction=False)
            self._set_if_version(
                keys=[full_key, self._version_key(namespace)],
                args=[data, int(ttl * 1000), version],
                client=pipe,
            )
            self._release(keys=[self._lock_key(full_key)], args=[token], client=pipe)
            pipe.execute()

        with contextlib.suppress(_Failed):
            self._call(store)

    def _release_quietly(self, full_key: str, token: str) -> None:
        with contextlib.suppress(_Failed):
            self._call(lambda: self._release(keys=[self._lock_key(full_key)], args=[token]))

    def _load_shared(self, key: str, namespace: str, loader: Callable[[], T], ttl: float) -> T:
        full_key = self._key(namespace, key)
        token = secrets.token_hex(16)
        poll = _FIRST_POLL
        try:
            while True:
                value, version, acquired = self._claim(full_key, namespace, token)
                if value is not MISS:
                    return cast("T", value)
                if acquired:
                    break
                time.sleep(poll)
                poll = min(poll * 2, _MAX_POLL)
        except _Failed:
            return loader()  # Redis is unavailable: serve the caller anyway
        try:
            value = loader()
        except BaseException:
            self._release_quietly(full_key, token)
            raise
        try:
            self._store_and_release(full_key, namespace, version, value, ttl, token)
        except BaseException:
            self._release_quietly(full_key, token)
            raise
        return value

    async def _aload_shared(
        self, key: str, namespace: str, loader: Callable[[], Awaitable[T]], ttl: float
    ) -> T:
        full_key = self._key(namespace, key)
        token = secrets.token_hex(16)
        poll = _FIRST_POLL
        try:
            while True:
                value, version, acquired = await asyncio.to_thread(
                    self._claim, full_key, namespace, token
                )
                if value is not MISS:
                    return cast("T", value)
                if acquired:
                    break
                await asyncio.sleep(poll)
                poll = min(poll * 2, _MAX_POLL)
        except _Failed:
            return await loader()
        try:
            value = await loader()
        except BaseException:
            await asyncio.to_thread(self._release_quietly, full_key, token)
            raise
        try:
            await asyncio.to_thread(
                self._store_and_release, full_key, namespace, version, value, ttl, token
            )
        except BaseException:
            await asyncio.to_thread(self._release_quietly, full_key, token)
            raise
        return value

    def _try_lock(self, full_key: str, namespace: str, token: str) -> tuple[bool, bytes]:
        def claim() -> list[Any]:
            pipe = self._client.pipeline(transaction=False)
            pipe.set(self._lock_key(full_key), token, nx=True, px=int(self.lock_ttl * 1000))
            pipe.get(self._version_key(namespace))
            return pipe.execute()

        acquired, version = self._call(claim)
        return bool(acquired), version or b"0"

    def _try_load_shared(self, key: str, namespace: str, loader: Callable[[], T], ttl: float) -> T:
        full_key = self._key(namespace, key)
        token = secrets.token_hex(16)
        try:
            acquired, version = self._try_lock(full_key, namespace, token)
        except _Failed:
            return loader()
        if not acquired:
            return cast("T", BUSY)
        try:
            value = loader()
            self._store_and_release(full_key, namespace, version, value, ttl, token)
        except BaseException:
            self._release_quietly(full_key, token)
            raise
        return value

    async def _atry_load_shared(
        self, key: str, namespace: str, loader: Callable[[], Awaitable[T]], ttl: float
    ) -> T:
        full_key = self._key(namespace, key)
        token = secrets.token_hex(16)
        try:
            acquired, version = await asyncio.to_thread(self._try_lock, full_key, namespace, token)
        except _Failed:
            return await loader()
        if not acquired:
            return cast("T", BUSY)
        try:
            value = await loader()
            await asyncio.to_thread(
                self._store_and_release, full_key, namespace, version, value, ttl, token
            )
        except BaseException:
            await asyncio.to_thread(self._release_quietly, full_key, token)
            raise
        return value

    def _check_round_trip(self, key: str, value: Any) -> None:
        # Straight to the client: errors must surface, and an open breaker must not
        # turn a healthy server into a failed check (or the reverse).
        full_key = self._key("#health", key)
        self._client.set(full_key, self._codec.dumps(full_key, value), px=10_000)
        raw = self._client.get(full_key)
        self._client.delete(full_key)
        if raw is None or self._codec.loads(full_key, cast("bytes", raw)) != value:
            raise RuntimeError("Redis did not return the value just written to it")

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


class _MismatchLog:
    """Counts refused values and warns at most once per *interval* seconds, with the
    number refused since the last warning: a wrong key must not flood the log.

    Lock-free (itertools.count's next() is atomic), so nothing can be held across a fork.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._counter = itertools.count()
        self._reported = 0
        self._last_warning: float | None = None

    @property
    def count(self) -> int:
        return int(repr(self._counter)[len("count(") : -1])

    def record(self, full_key: str, reason: str) -> None:
        next(self._counter)
        now = time.monotonic()
        last = self._last_warning
        if last is not None and now - last < self._interval:
            return
        self._last_warning = now
        total = self.count
        refused, self._reported = total - self._reported, total
        logger.warning(
            "cache_signature_mismatch",
            # Without the arguments part: arguments may be personal data.
            key=_ARGUMENTS.split(full_key, 1)[0],
            reason=reason,
            refused=refused,
            effect="treated as a miss; check that every process uses the same "
            "CACHE_SIGNING_KEY (a key being rotated out belongs in "
            "CACHE_SIGNING_KEY_FALLBACKS)",
        )
