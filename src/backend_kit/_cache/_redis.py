"""The shared cache: Redis through redis-py (sync) and redis.asyncio (async), single-flight
across processes, and a per-process memory tier for when Redis is unavailable."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
import secrets
import threading
import time
import weakref
import zlib
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, TypeVar, cast

import orjson
import structlog

from backend_kit._forksafe import reset_in_child
from backend_kit._redis_clients import (
    async_redis_client,
    close_client,
    parse_redis_url,
    ping_every_node,
    redis_client,
    redis_errors,
)

from ._backend import MISS, CacheBackend, check_namespace
from ._breaker import CircuitBreaker
from ._flight import BUSY
from ._memory import MemoryCache
from ._serialize import JSON_TAG, SignatureMismatch, ValueCodec

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

    SyncClient = redis.Redis | redis.cluster.RedisCluster
    AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

__all__ = ["RedisCache"]

T = TypeVar("T")
logger = structlog.get_logger("backend_kit.cache")

# Deletes the lock only if it still holds our token: a holder whose lock expired must not
# release the lock that a waiter took over since.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Stores a loaded value only if its namespace's version is still the one the load read:
# not invalidated, and not expired, while it was loading.
_SET_IF_VERSION = """
if redis.call('GET', KEYS[2]) ~= ARGV[3] then return 0 end
return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
"""
# A namespace's version (<prefix>#version:<namespace>) is a random token, replaced by
# each invalidation and created by the first load that finds none. Tokens are 62
# random bits, so an expired and re-created version does not equal the one a running
# load read (a chance of 2**-62), and no outdated value comes back. Every load
# refreshes the expiry, so only a namespace that no load used for this long is
# forgotten (its next load starts a new token).
VERSION_TTL_SECONDS = 24 * 60 * 60


def _new_version() -> str:
    # A random integer rather than hex: a process of an earlier release, which INCRs the
    # version, still can during a rolling upgrade.
    return str(secrets.randbits(62))


_ARGUMENTS = re.compile(r":(?=[\[{#])")
# The end of a key's hash tag (see `RedisCache._tag`): what precedes it is not user data.
_TAG_END = re.compile(r"\|[0-9a-f]\}[:#]")
#: How many hash slots (at most) the keys of one namespace spread over.
TAGS_PER_NAMESPACE: Final = 16
_json_loads = orjson.loads
_FIRST_POLL = 0.005
_MAX_POLL = 0.05


def _install_hint() -> ImportError:
    return ImportError(
        'the Redis cache needs redis-py: pip install "backend-kit[redis]" '
        "(or set CACHE_URL=memory:// for an in-process cache)"
    )


class _Failed(Exception):
    """The server failed or is being skipped; the breaker has been told. The caller
    falls back to the memory tier."""


class _Commands(NamedTuple):
    """Step: run the commands *queue* adds to a pipeline, in one round trip; the
    result is their replies. `_Failed` is thrown in when Redis fails or is skipped."""

    queue: Callable[[Any], object]


class _Pause(NamedTuple):
    """Step: wait *seconds* before polling again."""

    seconds: float


class _Unlock(NamedTuple):
    """Step: release the lock if it still holds *token*; carried out even when the
    caller is being cancelled, and never fails."""

    full_key: str
    token: str


class _Fallback(NamedTuple):
    """Step: load through this process's memory tier; the result is the value (or
    BUSY, with *busy_if_loading*, when another caller is loading it)."""

    key: str
    namespace: str
    ttl: float
    busy_if_loading: bool


#: Step: run the loader; the result is its value (its exception is thrown in).
_LOAD: Final = object()

_Flow = Generator[Any, Any, Any]


class RedisCache(CacheBackend):
    """A cache in Redis shared by every process that uses the same *url* and *prefix*.

    *url* names one server (``redis://``, ``rediss://``, ``unix://``), a Sentinel-managed
    master (``redis+sentinel://host1:26379,host2:26379/service_name/db``) or a Redis
    Cluster (``redis+cluster://host1:6379,host2:6379``); *tls_options*
    (``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``) apply to a
    TLS URL whose query string does not set them. A value, its lock and its namespace's
    version share a hash slot, so every multi-key command works on a cluster.

    The clients are pooled (up to *max_connections* per client) and always have connect
    and read timeouts (*timeout* seconds); they never retry by themselves, whatever the
    URL says. Async calls use redis.asyncio directly (one client per event loop).
    Values are JSON unless *serializer* is ``"pickle"``, which requires a *signing_key*.
    A miss that several processes hit together is loaded by one of them under a Redis
    lock (``SET NX PX``); the others poll for the value for up to *lock_ttl* seconds,
    then load it themselves. A lock whose holder died expires after *lock_ttl*.

    When Redis fails, calls use a per-process memory cache of *fallback_maxsize*
    entries instead, with the same ttl and single-flight: during an outage each key
    is loaded at most once per process per ttl. After *failure_threshold* consecutive
    failures Redis is skipped, except for one probing call every *probe_interval*
    seconds; the first probe that succeeds switches back to Redis (and drops the
    memory tier). One warning is logged per *warn_interval* seconds.
    *variable_prefix* is the settings' environment prefix (``SHOP_``), so that messages
    name the variables as they are set.

    Raises `ValueError` for a bad *url* (saying what is wrong, without its password),
    *timeout* or *lock_ttl*.

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
        probe_interval: float = 0.5,
        warn_interval: float = 60.0,
        fallback_maxsize: int = 1024,
        tls_options: Mapping[str, Any] | None = None,
        variable_prefix: str = "",
    ) -> None:
        try:
            import redis  # noqa: F401
        except ImportError:  # pragma: no cover - exercised only without the extra
            raise _install_hint() from None
        if not timeout > 0 or not lock_ttl > 0:
            raise ValueError("timeout and lock_ttl must be greater than 0 seconds")
        super().__init__()
        self.prefix = prefix
        self.lock_ttl = lock_ttl
        self._lock_ms = int(lock_ttl * 1000)
        self.timeout = timeout
        self._codec = ValueCodec(
            serializer, signing_key, signing_key_fallbacks, variable_prefix=variable_prefix
        )
        # In JSON mode a hit decodes the value itself (what `ValueCodec.loads_checked`
        # does for a JSON value, without its calls); anything else goes through `_decode`.
        self._json_values = serializer == "json"
        self._mismatches = _MismatchLog(warn_interval, variable_prefix)
        self._target = parse_redis_url(url, tls_defaults=tls_options)
        self._display_url = self._target.display
        self._max_connections = max_connections
        # Made on first use: a cluster client reads the cluster's layout when it is
        # created, which must fail like any other call rather than here.
        self._client: SyncClient | None = None
        self._connect_lock = threading.Lock()
        self._async_lock = threading.Lock()
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._closers: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, AsyncGenerator[None, None]
        ] = weakref.WeakKeyDictionary()
        # The creation of a loop's client, awaited by every task that needs it meanwhile.
        self._opening: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, asyncio.Task[AsyncClient]
        ] = weakref.WeakKeyDictionary()
        # Strong references to releases that must finish even if their caller is cancelled.
        self._releasing: set[asyncio.Task[None]] = set()
        self._errors = redis_errors()
        self._fallback = MemoryCache(fallback_maxsize)
        self._fallback_count = itertools.count()
        self._flight.wait_timeout = self._async_flight.wait_timeout = max(60.0, 2 * lock_ttl)
        self.breaker = CircuitBreaker(
            backend=f"redis {self._display_url}",
            threshold=failure_threshold,
            probe_interval=probe_interval,
            warn_interval=warn_interval,
            # What was cached during the outage may have been invalidated elsewhere
            # meanwhile: from now on Redis is the truth again.
            on_recovered=self._fallback.clear,
        )
        self._breaker = self.breaker  # what cached() reads to count its fallbacks
        reset_in_child(self)

    def __repr__(self) -> str:
        return f"RedisCache({self._display_url!r}, prefix={self.prefix!r})"

    @property
    def client(self) -> SyncClient:
        """The underlying redis-py client (pooled, with timeouts, without retries):
        `redis.Redis`, or `redis.cluster.RedisCluster` for a cluster URL (whose creation
        raises the cluster's error when no node answers)."""
        return self._sync()

    @property
    def kind(self) -> str:
        """``"server"``, ``"sentinel"`` or ``"cluster"``: what the URL names."""
        return self._target.kind

    def _sync(self) -> SyncClient:
        """The sync client, made on first use."""
        client = self._client
        if client is None:
            with self._connect_lock:
                client = self._client
                if client is None:
                    client = self._client = redis_client(
                        self._target, timeout=self.timeout, max_connections=self._max_connections
                    )
        return client

    @property
    def fallbacks(self) -> int:
        """Operations this process answered from its memory tier because Redis was
        unavailable (reads, writes and loads), since this cache was created."""
        return int(repr(self._fallback_count)[len("count(") : -1])

    async def _aclient(self) -> AsyncClient:
        """This event loop's client, created on its first use."""
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = await self._open_aclient(loop)
        return client

    async def _open_aclient(self, loop: asyncio.AbstractEventLoop) -> AsyncClient:
        # One creation per loop, shared by the tasks that arrive meanwhile: a cluster
        # client reads the cluster's layout when it is made, once is enough. Shielded,
        # so a waiter being cancelled does not cancel it for the others.
        with self._async_lock:
            opening = self._opening.get(loop)
            if opening is None:
                opening = self._opening[loop] = loop.create_task(self._make_aclient(loop))
        return await asyncio.shield(opening)

    async def _make_aclient(self, loop: asyncio.AbstractEventLoop) -> AsyncClient:
        try:
            client = await async_redis_client(
                self._target, timeout=self.timeout, max_connections=self._max_connections
            )
            # The loop closes its async generators when it shuts down (asyncio.run
            # does): this one closes the client's connections then, inside the loop.
            closer = _close_at_shutdown(client)
            self._closers[loop] = closer
            await closer.__anext__()
            self._async_clients[loop] = client
            return client
        finally:
            with self._async_lock:
                self._opening.pop(loop, None)

    def _reset_after_fork(self) -> None:
        """Drop what a child process must not share with its parent: pooled
        connections, the async clients, locks and breaker state (the single-flight
        table resets itself)."""
        # Dropped, not closed: closing would shut the sockets the parent still uses. A
        # new client is made on first use (not ``pool.reset()``: that takes the pool's
        # lock, which a parent's thread may have held at the fork).
        self._client = None
        self._connect_lock = threading.Lock()
        self._async_lock = threading.Lock()
        self._async_clients = weakref.WeakKeyDictionary()
        self._closers = weakref.WeakKeyDictionary()
        self._opening = weakref.WeakKeyDictionary()
        self._releasing = set()
        self.breaker.reset()
        self._fallback = MemoryCache(self._fallback.maxsize)
        self.breaker._on_recovered = self._fallback.clear

    # -- keys --------------------------------------------------------------------------
    #
    # Every key starts with a Redis Cluster hash tag, ``{namespace|t}``, where t (one hex
    # digit) is taken from a checksum of the key: a value, its lock and the version of
    # its namespace carry the same tag, so they share a hash slot and the commands that
    # touch several of them together work on a cluster; a namespace spreads over
    # TAGS_PER_NAMESPACE slots, each with its own version key.
    #
    #   value    <prefix>{<namespace>|t}:<key>
    #   lock     <prefix>{<namespace>|t}#lock:<key>
    #   version  <prefix>{<namespace>|t}#version

    def _tag(self, namespace: str, key: str) -> str:
        return f"{self.prefix}{{{namespace}|{zlib.crc32(key.encode()) & 15:x}}}"

    def _key(self, namespace: str, key: str) -> str:
        return f"{self._tag(namespace, key)}:{key}"

    def _split(self, full_key: str) -> tuple[str, str]:
        """A value's key as (its tag, the rest from the colon on)."""
        end = full_key.index("}:", len(self.prefix)) + 1
        return full_key[:end], full_key[end:]

    def _version_key(self, full_key: str) -> str:
        """The version key of the namespace slice that *full_key* (a value's key) is in."""
        return self._split(full_key)[0] + "#version"

    def _version_keys(self, namespace: str) -> list[str]:
        """Every version key of *namespace*."""
        return [
            f"{self.prefix}{{{namespace}|{tag:x}}}#version" for tag in range(TAGS_PER_NAMESPACE)
        ]

    def _lock_key(self, full_key: str) -> str:
        tag, rest = self._split(full_key)
        return f"{tag}#lock{rest}"

    def _namespace_pattern(self, namespace: str, key_prefix: str = "") -> str:
        """A SCAN pattern for the values of *namespace* whose key starts with *key_prefix*."""
        return (
            _glob_escape(f"{self.prefix}{{{namespace}|")
            + "[0-9a-f]}:"
            + _glob_escape(key_prefix)
            + "*"
        )

    def _queue_version_read(self, pipe: Any, version_key: str) -> Any:
        """Queue on *pipe*: create the version at *version_key* if missing, refresh its
        expiry (two replies to skip), then the caller reads it."""
        ttl_ms = VERSION_TTL_SECONDS * 1000
        pipe.set(version_key, _new_version(), nx=True, px=ttl_ms)
        pipe.pexpire(version_key, ttl_ms)
        return pipe

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

    async def _acall(self, operation: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise _Failed
        try:
            result = await operation()
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
                self._call(lambda: self._sync().set(full_key, data, keepttl=True, xx=True))
        return value

    @property
    def signature_mismatches(self) -> int:
        """Values read from Redis and refused (treated as misses) in this process."""
        return self._mismatches.count

    def _fallback_read(self, key: str, namespace: str) -> Any:
        next(self._fallback_count)
        return self._fallback._read(key, namespace)

    def _read(self, key: str, namespace: str) -> Any:
        # A hit is one GET: namespace invalidation deletes keys rather than making every
        # read also fetch the namespace's version.
        # The hot path of every hit: the breaker asked only when it is not closed (its
        # own checks, read here without the method calls).
        breaker = self.breaker
        if breaker._next_probe and not breaker.allow():
            return self._fallback_read(key, namespace)
        full_key = self._key(namespace, key)
        try:
            client = self._client
            if client is None:
                client = self._sync()
            raw = client.get(full_key)
        except self._errors as exc:
            breaker.failure(exc)
            return self._fallback_read(key, namespace)
        if breaker._failures:
            breaker.success()
        if raw is None:
            return MISS
        # The clients are created without decode_responses, so replies are bytes.
        if self._json_values and raw[:1] == JSON_TAG:
            return _json_loads(raw[1:])
        return self._decode(full_key, raw)  # type: ignore[arg-type]

    async def _aread(self, key: str, namespace: str) -> Any:
        # `_read`'s shortcuts: the breaker asked only when it is not closed.
        breaker = self.breaker
        if breaker._next_probe and not breaker.allow():
            return self._fallback_read(key, namespace)
        full_key = self._key(namespace, key)
        try:
            client = self._async_clients.get(asyncio.get_running_loop())
            if client is None:
                client = await self._aclient()
            raw = await client.get(full_key)
        except self._errors as exc:
            breaker.failure(exc)
            return self._fallback_read(key, namespace)
        if breaker._failures:
            breaker.success()
        if raw is None:
            return MISS
        if self._json_values and raw[:1] == JSON_TAG:
            return _json_loads(raw[1:])
        return self._decode(full_key, cast("bytes", raw))

    def _write(self, key: str, namespace: str, value: Any, ttl: float) -> None:
        self._run(self._write_flow(key, namespace, value, ttl))

    def _remove(self, key: str, namespace: str) -> None:
        self._fallback._remove(key, namespace)
        with contextlib.suppress(_Failed):
            self._call(lambda: self._sync().delete(self._key(namespace, key)))

    def _remove_matching(self, pattern: str) -> None:
        def remove() -> None:
            # On a cluster, scan_iter walks every primary, and unlink splits its keys
            # by slot: one UNLINK per slot.
            client = self._sync()
            batch: list[bytes] = []
            for found in client.scan_iter(match=pattern, count=500):
                batch.append(found)
                if len(batch) >= 500:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)

        with contextlib.suppress(_Failed):
            self._call(remove)

    def _remove_prefix(self, key_prefix: str, namespace: str) -> None:
        self._fallback._remove_prefix(key_prefix, namespace)
        self._remove_matching(self._namespace_pattern(namespace, key_prefix))

    def clear(self) -> None:
        """Delete every key under this cache's prefix (values, versions and locks), and
        this process's memory tier."""
        self._fallback.clear()
        self._remove_matching(_glob_escape(self.prefix) + "*")

    def invalidate_namespace(self, namespace: str) -> None:
        """Delete every key of *namespace* (a SCAN over this cache's keys, on every
        primary of a cluster). The namespace's versions are replaced first, so a load
        that started before this call does not store its possibly outdated value
        afterwards."""
        check_namespace(namespace)
        self._fallback._remove_where(lambda slot: slot[0] == namespace)

        def replace_versions() -> None:
            # One SET per slice of the namespace, pipelined (grouped by node on a
            # cluster); each is a single-key command.
            pipe = self._sync().pipeline(transaction=False)
            for version_key in self._version_keys(namespace):
                pipe.set(version_key, _new_version(), px=VERSION_TTL_SECONDS * 1000)
            pipe.execute()

        with contextlib.suppress(_Failed):
            self._call(replace_versions)
            self._remove_matching(self._namespace_pattern(namespace))

    # -- single flight across processes ----------------------------------------------
    #
    # A load is written once, as a flow: a generator that yields the steps it needs
    # (Redis commands, a pause, running the loader...) and receives their results, or
    # has their exceptions thrown in. `_run` carries the steps out for plain loaders,
    # `_arun` for coroutine loaders; neither knows what a load is.

    def _load_flow(self, key: str, namespace: str, ttl: float) -> _Flow:
        full_key = self._key(namespace, key)
        token = secrets.token_hex(16)
        poll = _FIRST_POLL
        waited_since = time.monotonic()
        holding = False
        try:
            while True:
                # The lock is taken before the value is read, in one round trip: a
                # holder stores its value before releasing the lock, so whoever gets
                # the lock next sees it.
                holding = True  # a claim interrupted midway may still have taken it
                # Single-key commands only (a cluster pipeline refuses MGET); the
                # keys share a hash slot, so on a cluster too this is one round trip
                # to one node.
                acquired, _, _, raw, version = yield _Commands(
                    lambda pipe: (
                        pipe.set(self._lock_key(full_key), token, nx=True, px=self._lock_ms),
                        self._queue_version_read(pipe, self._version_key(full_key)),
                        pipe.get(full_key),
                        pipe.get(self._version_key(full_key)),
                    )
                )
                holding = bool(acquired)
                value = self._decode(full_key, raw)
                if value is not MISS:
                    return value
                if acquired:
                    break
                if self._lock_wait_over(waited_since):
                    loaded = yield _LOAD
                    yield from self._write_flow(key, namespace, loaded, ttl)
                    return loaded
                yield _Pause(poll)
                poll = min(poll * 2, _MAX_POLL)
            loaded = yield _LOAD
            yield from self._store_flow(full_key, namespace, version, loaded, ttl, token)
            holding = False
            return loaded
        except _Failed:
            # Redis is unavailable: this process's memory tier, under the same flight.
            # No release: it would wait out another timeout, and the lock expires.
            holding = False
            next(self._fallback_count)
            return (yield _Fallback(key, namespace, ttl, busy_if_loading=False))
        finally:
            if holding:
                yield _Unlock(full_key, token)

    def _try_load_flow(self, key: str, namespace: str, ttl: float) -> _Flow:
        """`_load_flow` for a refresh: BUSY at once when another process holds the lock."""
        full_key = self._key(namespace, key)
        token = secrets.token_hex(16)
        holding = True
        try:
            acquired, _, _, version = yield _Commands(
                lambda pipe: (
                    pipe.set(self._lock_key(full_key), token, nx=True, px=self._lock_ms),
                    self._queue_version_read(pipe, self._version_key(full_key)),
                    pipe.get(self._version_key(full_key)),
                )
            )
            holding = bool(acquired)
            if not acquired:
                return BUSY
            loaded = yield _LOAD
            yield from self._store_flow(full_key, namespace, version, loaded, ttl, token)
            holding = False
            return loaded
        except _Failed:
            holding = False
            next(self._fallback_count)
            return (yield _Fallback(key, namespace, ttl, busy_if_loading=True))
        finally:
            if holding:
                yield _Unlock(full_key, token)

    def _store_flow(
        self,
        full_key: str,
        namespace: str,
        version: bytes | None,
        value: Any,
        ttl: float,
        token: str,
    ) -> _Flow:
        """Store *value* unless its namespace was invalidated meanwhile, and release the
        lock, in one round trip. A failure is left to the lock's expiry."""
        data = self._codec.dumps(full_key, value)
        with contextlib.suppress(_Failed):
            yield _Commands(
                lambda pipe: (
                    # EVAL by name: the sync cluster pipeline's eval() takes no script.
                    # Its two keys (the value, its version) share a hash slot.
                    pipe.execute_command(
                        "EVAL",
                        _SET_IF_VERSION,
                        2,
                        full_key,
                        self._version_key(full_key),
                        data,
                        int(ttl * 1000),
                        version or b"",
                    ),
                    pipe.execute_command("EVAL", _RELEASE, 1, self._lock_key(full_key), token),
                )
            )

    def _write_flow(self, key: str, namespace: str, value: Any, ttl: float) -> _Flow:
        full_key = self._key(namespace, key)
        data = self._codec.dumps(full_key, value)
        try:
            yield _Commands(lambda pipe: pipe.set(full_key, data, px=int(ttl * 1000)))
        except _Failed:
            next(self._fallback_count)
            self._fallback._write(key, namespace, value, ttl)

    def _lock_wait_over(self, waited_since: float) -> bool:
        if time.monotonic() - waited_since < self.lock_ttl:
            return False
        logger.warning(
            "cache_lock_wait_timeout",
            backend=self.breaker.backend,
            waited=self.lock_ttl,
            effect="this process loads the value itself instead of waiting longer",
        )
        return True

    def _run(self, flow: _Flow, loader: Callable[[], Any] | None = None) -> Any:
        """Carry out *flow* with the sync client and a plain *loader*."""
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                return done.value
            reply, error = None, None
            try:
                if type(step) is _Commands:
                    reply = self._call(functools.partial(self._execute, step.queue))
                elif step is _LOAD:
                    reply = loader()  # type: ignore[misc]
                elif type(step) is _Unlock:
                    self._unlock(step)
                elif type(step) is _Pause:
                    time.sleep(step.seconds)
                elif type(step) is _Fallback:
                    fallback = self._fallback
                    load = (
                        fallback._try_load_shared if step.busy_if_loading else fallback._load_shared
                    )
                    reply = load(step.key, step.namespace, loader, step.ttl)  # type: ignore[arg-type]
            except BaseException as exc:  # the flow decides what to do, and re-raises
                error = exc

    async def _arun(self, flow: _Flow, loader: Callable[[], Awaitable[Any]] | None = None) -> Any:
        """Carry out *flow* with this event loop's client and a coroutine *loader*."""
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                step = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as done:
                return done.value
            reply, error = None, None
            try:
                if type(step) is _Commands:
                    reply = await self._acall(functools.partial(self._aexecute, step.queue))
                elif step is _LOAD:
                    reply = await loader()  # type: ignore[misc]
                elif type(step) is _Unlock:
                    await self._aunlock_surely(step)
                elif type(step) is _Pause:
                    await asyncio.sleep(step.seconds)
                elif type(step) is _Fallback:
                    fallback = self._fallback
                    load = (
                        fallback._atry_load_shared
                        if step.busy_if_loading
                        else fallback._aload_shared
                    )
                    reply = await load(step.key, step.namespace, loader, step.ttl)  # type: ignore[arg-type]
            except BaseException as exc:  # the flow decides what to do, and re-raises
                error = exc

    def _execute(self, queue: Callable[[Any], object]) -> list[Any]:
        pipe = self._sync().pipeline(transaction=False)
        queue(pipe)
        return pipe.execute()

    async def _aexecute(self, queue: Callable[[Any], object]) -> list[Any]:
        pipe = (await self._aclient()).pipeline(transaction=False)
        queue(pipe)
        return await pipe.execute()

    def _unlock(self, step: _Unlock) -> None:
        with contextlib.suppress(_Failed):
            self._call(
                lambda: self._sync().eval(_RELEASE, 1, self._lock_key(step.full_key), step.token)
            )

    async def _aunlock(self, step: _Unlock) -> None:
        client = await self._aclient()
        with contextlib.suppress(_Failed):
            await self._acall(
                lambda: client.eval(_RELEASE, 1, self._lock_key(step.full_key), step.token)
            )

    async def _aunlock_surely(self, step: _Unlock) -> None:
        """Release the lock in a task of its own: a cancellation of the caller (now, or
        while this waits) does not stop the release."""
        task = asyncio.get_running_loop().create_task(self._aunlock(step))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        await asyncio.shield(task)

    def _load_shared(self, key: str, namespace: str, loader: Callable[[], T], ttl: float) -> T:
        return cast("T", self._run(self._load_flow(key, namespace, ttl), loader))

    def _try_load_shared(self, key: str, namespace: str, loader: Callable[[], T], ttl: float) -> T:
        return cast("T", self._run(self._try_load_flow(key, namespace, ttl), loader))

    async def _aload_shared(
        self, key: str, namespace: str, loader: Callable[[], Awaitable[T]], ttl: float
    ) -> T:
        return cast("T", await self._arun(self._load_flow(key, namespace, ttl), loader))

    async def _atry_load_shared(
        self, key: str, namespace: str, loader: Callable[[], Awaitable[T]], ttl: float
    ) -> T:
        return cast("T", await self._arun(self._try_load_flow(key, namespace, ttl), loader))

    def _check_round_trip(self, key: str, value: Any) -> None:
        # Straight to the client: errors must surface, and an open breaker must not
        # turn a healthy server into a failed check (or the reverse).
        full_key = self._key("#health", key)
        client = self._sync()
        # Every primary of a cluster, not only the one that holds the probe's slot.
        ping_every_node(client)
        client.set(full_key, self._codec.dumps(full_key, value), px=10_000)
        raw = client.get(full_key)
        client.delete(full_key)
        if raw is None or self._codec.loads(full_key, cast("bytes", raw)) != value:
            raise RuntimeError("Redis did not return the value just written to it")

    def close(self) -> None:
        """Close the pooled connections of the sync client (async clients close with
        their event loop)."""
        client, self._client = self._client, None
        if client is not None:
            close_client(client)


def _without_arguments(full_key: str) -> str:
    """*full_key* without the arguments part, which may hold personal data."""
    tag_end = _TAG_END.search(full_key)
    start = tag_end.end() if tag_end else 0
    return full_key[:start] + _ARGUMENTS.split(full_key[start:], 1)[0]


async def _close_at_shutdown(client: AsyncClient) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        from redis.asyncio.cluster import RedisCluster

        if isinstance(client, RedisCluster):
            await client.aclose()
        else:
            await client.aclose(close_connection_pool=True)


def _glob_escape(text: str) -> str:
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


class _MismatchLog:
    """Counts refused values and warns at most once per *interval* seconds, with the
    number refused since the last warning: a wrong key must not flood the log.

    Lock-free (itertools.count's next() is atomic), so nothing can be held across a fork.
    """

    def __init__(self, interval: float, variable_prefix: str = "") -> None:
        self._interval = interval
        self._key_variable = f"{variable_prefix}CACHE_SIGNING_KEY"
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
            key=_without_arguments(full_key),
            reason=reason,
            refused=refused,
            effect="treated as a miss; check that every process uses the same "
            f"{self._key_variable} (a key being rotated out belongs in "
            f"{self._key_variable}_FALLBACKS)",
        )
