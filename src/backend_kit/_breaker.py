"""Circuit breakers: stop calling a dependency that keeps failing, then probe it.

A breaker is closed (calls go through), open (calls fail fast with `CircuitOpenError`
without being made) or half-open (a limited number of probe calls decide whether it
closes again). It opens after *failures* consecutive failures, or when the share of
failed calls over the last *window* seconds reaches *failure_ratio* (with at least
*minimum_calls* calls in the window).

State is kept in the process, or in Redis when *redis_url* is given, so every worker
and host of a service opens and closes together. Redis state changes run as Lua
scripts (one atomic step each, no read-modify-write race between processes), keyed
under a ``{hash tag}`` so a cluster keeps a breaker's keys on one slot. The shared
breaker keeps a local copy of the state for *sync_interval* seconds: a call on the
closed path makes no Redis round trip while the copy is fresh, and at most one when
it is not.
"""

from __future__ import annotations

import functools
import inspect
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, cast

from . import _metric_hooks
from ._forksafe import after_fork_in_child

if TYPE_CHECKING:
    import redis
    import redis.cluster

__all__ = [
    "CircuitBreaker",
    "CircuitOpenError",
    "SecondsWindow",
    "circuit_breaker",
    "open_circuits",
]

P = ParamSpec("P")
T = TypeVar("T")

State = Literal["closed", "open", "half_open"]
_CLOSED: State = "closed"
_OPEN: State = "open"
_HALF_OPEN: State = "half_open"

_LOGGER_NAME = "backend_kit.circuit_breaker"

# Every breaker of the process, for the health report; weak so a dropped one goes.
_breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()
_breakers_lock = threading.Lock()


class CircuitOpenError(Exception):
    """Raised instead of calling while a circuit is open (or its probes are all taken).

    ``name`` is the breaker's name, ``retry_after`` the seconds until a probe may run.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = max(0.0, retry_after)
        super().__init__(
            f"circuit {name!r} is open: calls fail fast for another "
            f"{self.retry_after:.1f}s, then a probe call is let through"
        )


class SecondsWindow:
    """Two counts per whole second over the last *window* seconds: the sliding window
    behind a breaker's failure ratio and a retry budget. Not locked: its owner's lock
    guards it."""

    __slots__ = ("_buckets", "window")

    def __init__(self, window: float) -> None:
        self.window = window
        self._buckets: dict[int, list[int]] = {}  # second -> [first count, second count]

    def current(self) -> list[int]:
        """This second's two counts, to add to; older seconds are dropped here."""
        second = int(time.monotonic())
        bucket = self._buckets.get(second)
        if bucket is None:
            horizon = second - self.window
            self._buckets = {s: b for s, b in self._buckets.items() if s > horizon}
            bucket = self._buckets[second] = [0, 0]
        return bucket

    def totals(self) -> tuple[int, int]:
        """The two counts summed over the window."""
        horizon = time.monotonic() - self.window
        first = second = 0
        for at, (bucket_first, bucket_second) in self._buckets.items():
            if at > horizon:
                first += bucket_first
                second += bucket_second
        return first, second

    def clear(self) -> None:
        self._buckets = {}


class CircuitBreaker:
    """A circuit breaker; see `circuit_breaker` for the arguments.

    Use it as a decorator (plain or ``async`` functions), as a context manager
    (``with breaker:`` or ``async with breaker:``), or call `allow` and `record` by hand.
    """

    def __init__(
        self,
        name: str,
        *,
        failures: int = 5,
        failure_ratio: float | None = None,
        window: float = 60.0,
        minimum_calls: int = 10,
        recovery_timeout: float = 30.0,
        half_open_calls: int = 1,
        failure_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
        redis_url: str | None = None,
        sync_interval: float = 0.5,
        redis_timeout: float = 0.5,
    ) -> None:
        _check_arguments(
            name, failures, failure_ratio, window, minimum_calls, recovery_timeout, half_open_calls
        )
        self.name = name
        self.failures = failures
        self.failure_ratio = failure_ratio
        self.window = float(window)
        self.minimum_calls = minimum_calls
        self.recovery_timeout = float(recovery_timeout)
        self.half_open_calls = half_open_calls
        self.failure_on = failure_on
        self._lock = threading.Lock()
        # The closed-path check reads only this attribute.
        self._state: State = _CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._probes = 0
        self._counts = SecondsWindow(self.window)  # [calls, failures] per second
        self._shared = (
            _SharedState(self, redis_url, sync_interval, redis_timeout)
            if redis_url is not None
            else None
        )
        with _breakers_lock:
            _breakers.add(self)

    def __repr__(self) -> str:
        where = "redis" if self._shared is not None else "process"
        return f"<CircuitBreaker {self.name!r} {self.state} ({where})>"

    @property
    def recovery_timeout_ms(self) -> int:
        """*recovery_timeout* in whole milliseconds, as the Redis scripts count."""
        return int(self.recovery_timeout * 1000)

    @property
    def state(self) -> State:
        """``"closed"``, ``"open"`` or ``"half_open"`` as this process sees it."""
        if self._shared is not None:
            return self._shared.cached_state()
        if self._state == _OPEN and time.monotonic() - self._opened_at >= self.recovery_timeout:
            return _HALF_OPEN
        return self._state

    # -- the two calls everything else is built on ----------------------------------

    def allow(self) -> None:
        """Return when a call may be made now; raise `CircuitOpenError` when not.
        A call allowed must be followed by one `record`."""
        if self._shared is not None:
            self._shared.allow()
            return
        if self._state is _CLOSED:
            return
        with self._lock:
            now = time.monotonic()
            if self._state == _OPEN:
                remaining = self._opened_at + self.recovery_timeout - now
                if remaining > 0:
                    raise CircuitOpenError(self.name, remaining)
                self._transition(_HALF_OPEN, "recovery timeout elapsed")
                self._probes = 0
                self._opened_at = now
            if self._state == _HALF_OPEN:
                # A probe that never reported back frees its slot after the timeout.
                if now - self._opened_at >= self.recovery_timeout:
                    self._probes, self._opened_at = 0, now
                if self._probes >= self.half_open_calls:
                    raise CircuitOpenError(self.name, self._opened_at + self.recovery_timeout - now)
                self._probes += 1

    def record(self, success: bool) -> None:
        """Report the outcome of an allowed call."""
        if self._shared is not None:
            self._shared.record(success)
            return
        if success and self._state is _CLOSED and not self._consecutive:
            if self.failure_ratio is not None:
                self._count(success=True)
            return
        with self._lock:
            if self.failure_ratio is not None:
                self._count(success)
            if self._state == _HALF_OPEN:
                if success:
                    self._close()
                else:
                    self._open("a probe call failed")
                return
            if self._state == _OPEN:
                return
            if success:
                self._consecutive = 0
                return
            self._consecutive += 1
            if self._consecutive >= self.failures:
                self._open(f"{self._consecutive} consecutive failures")
            elif self.failure_ratio is not None:
                calls, failed = self._window_totals()
                if calls >= self.minimum_calls and failed / calls >= self.failure_ratio:
                    self._open(f"{failed} of {calls} calls failed in {self.window:g}s")

    def reset(self) -> None:
        """Close the breaker and forget every count (also in Redis when shared)."""
        with self._lock:
            self._state, self._consecutive, self._probes = _CLOSED, 0, 0
            self._counts.clear()
        if self._shared is not None:
            self._shared.reset()

    # -- decorator and context managers ------------------------------------------------

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Wrap *fn* (plain or ``async``) so each call goes through this breaker."""
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def call_async(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self:
                    return await fn(*args, **kwargs)

            return cast("Callable[P, T]", call_async)

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            with self:
                return fn(*args, **kwargs)

        return call

    def __enter__(self) -> CircuitBreaker:
        self.allow()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.record(exc is None or not isinstance(exc, self.failure_on))

    async def __aenter__(self) -> CircuitBreaker:
        self.allow()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.record(exc is None or not isinstance(exc, self.failure_on))

    # -- in-process state (under self._lock) -----------------------------------------------

    def _count(self, success: bool) -> None:
        bucket = self._counts.current()
        bucket[0] += 1
        if not success:
            bucket[1] += 1

    def _window_totals(self) -> tuple[int, int]:
        return self._counts.totals()

    def _open(self, reason: str) -> None:
        self._transition(_OPEN, reason)
        self._opened_at = time.monotonic()
        self._consecutive = 0
        self._counts.clear()

    def _close(self) -> None:
        self._transition(_CLOSED, "a probe call succeeded")
        self._consecutive = self._probes = 0
        self._counts.clear()

    def _transition(self, to: State, reason: str) -> None:
        previous, self._state = self._state, to
        if previous != to:
            log_transition(self.name, previous, to, reason)

    def _reset_after_fork(self) -> None:
        self._lock = threading.Lock()
        if self._shared is not None:
            self._shared.reset_after_fork()


def log_transition(name: str, previous: str, to: str, reason: str) -> None:
    """Log a breaker's change of state; never raises."""
    try:
        import structlog

        log = structlog.get_logger(_LOGGER_NAME)
        emit = log.warning if to == _OPEN else log.info
        emit("circuit_state_changed", circuit=name, previous=previous, state=to, reason=reason)
    except Exception:  # noqa: S110 - a log call never raises into the caller
        pass
    recorder = _metric_hooks.recorder
    if recorder is not None:
        recorder.breaker_transition(name, previous, to)  # never raises


# -- shared state in Redis ---------------------------------------------------------------

# KEYS[1]: the breaker's hash. Times come from the Redis server (TIME), so hosts with
# skewed clocks agree. Each script returns {state, changed-from or "", retry_after_ms,
# consecutive failures}.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_ALLOW_SCRIPT = (
    _NOW
    + """
local recovery = tonumber(ARGV[1])
local probes_max = tonumber(ARGV[2])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local since = tonumber(redis.call('HGET', KEYS[1], 'since') or '0')
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local changed = ''
if state == 'open' then
  if now - since < recovery then
    return {state, '', recovery - (now - since), failures, 0}
  end
  state = 'half_open'
  changed = 'open'
  since = now
  redis.call('HSET', KEYS[1], 'state', state, 'since', since, 'probes', 0)
end
if state == 'half_open' then
  local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
  if now - since >= recovery then
    probes = 0
    since = now
    redis.call('HSET', KEYS[1], 'since', since, 'probes', 0)
  end
  if probes >= probes_max then
    return {state, changed, recovery - (now - since), failures, 0}
  end
  redis.call('HINCRBY', KEYS[1], 'probes', 1)
end
return {state, changed, 0, failures, 1}
"""
)

_RECORD_SCRIPT = (
    _NOW
    + """
local success = ARGV[1] == '1'
local threshold = tonumber(ARGV[2])
local ratio = tonumber(ARGV[3])
local minimum = tonumber(ARGV[4])
local window = tonumber(ARGV[5])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
local function open(from)
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'state', 'open', 'since', now, 'failures', 0, 'probes', 0)
  return {'open', from, 0, 0}
end
if state == 'half_open' then
  if success then
    redis.call('DEL', KEYS[2])
    redis.call('HSET', KEYS[1], 'state', 'closed', 'since', now, 'failures', 0, 'probes', 0)
    return {'closed', 'half_open', 0, 0}
  end
  return open('half_open')
end
if state == 'open' then
  return {state, '', 0, failures}
end
if ratio >= 0 then
  local second = math.floor(now / 1000)
  local field = success and ('c' .. second) or ('f' .. second)
  redis.call('HINCRBY', KEYS[2], field, 1)
  if not success then redis.call('HINCRBY', KEYS[2], 'c' .. second, 1) end
  redis.call('PEXPIRE', KEYS[2], window * 1000 + 1000)
end
if success then
  if failures > 0 then redis.call('HSET', KEYS[1], 'failures', 0) end
  return {state, '', 0, 0}
end
failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= threshold then
  return open('closed')
end
if ratio >= 0 then
  local horizon = math.floor(now / 1000) - window
  local calls, failed = 0, 0
  local entries = redis.call('HGETALL', KEYS[2])
  for i = 1, #entries, 2 do
    local name, count = entries[i], tonumber(entries[i + 1])
    local second = tonumber(string.sub(name, 2))
    if second > horizon then
      if string.sub(name, 1, 1) == 'c' then calls = calls + count else failed = failed + count end
    else
      redis.call('HDEL', KEYS[2], name)
    end
  end
  if calls >= minimum and failed / calls >= ratio then
    return open('closed')
  end
end
return {state, '', 0, failures}
"""
)


class _SharedState:
    """A breaker's state in Redis, with a local copy trusted for *sync_interval*."""

    def __init__(
        self, breaker: CircuitBreaker, url: str, sync_interval: float, timeout: float
    ) -> None:
        self._breaker = breaker
        self._url = url
        self._timeout = timeout
        self._sync_interval = sync_interval
        # {hash tag}: both keys of a breaker land on one cluster slot.
        base = f"backend_kit:circuit:{{{breaker.name}}}"
        self._keys = [f"{base}:state", f"{base}:window"]
        self._client: redis.Redis | redis.cluster.RedisCluster | None = None
        self._scripts: tuple[Any, Any] | None = None
        self._cached: State = _CLOSED
        self._cached_failures = 0
        self._cached_at = -1e9
        self._redis_failed_at = -1e9

    def cached_state(self) -> State:
        if time.monotonic() - self._cached_at >= self._sync_interval:
            self._refresh()
        return self._cached

    def allow(self) -> None:
        if self._cached is _CLOSED and time.monotonic() - self._cached_at < self._sync_interval:
            return  # the closed path: no round trip while the local copy is fresh
        result = self._run(0, [self._breaker.recovery_timeout_ms, self._breaker.half_open_calls])
        if result is None:
            return  # Redis unreachable: the breaker must not become the outage
        state, changed, retry_after_ms, failures, allowed = result
        self._remember(state, failures)
        if changed:
            log_transition(self._breaker.name, changed, state, "recovery timeout elapsed")
        if not allowed:
            raise CircuitOpenError(self._breaker.name, retry_after_ms / 1000.0)

    def record(self, success: bool) -> None:
        breaker = self._breaker
        if (
            success
            and self._cached is _CLOSED
            and not self._cached_failures
            and breaker.failure_ratio is None
        ):
            return  # nothing to reset: no round trip for a success on the closed path
        ratio = -1.0 if breaker.failure_ratio is None else breaker.failure_ratio
        result = self._run(
            1,
            [
                "1" if success else "0",
                breaker.failures,
                ratio,
                breaker.minimum_calls,
                int(breaker.window),
            ],
        )
        if result is None:
            return
        state, changed, _, failures = result[:4]
        self._remember(state, failures)
        if changed:
            reasons = {
                _OPEN: "failures reached the threshold"
                if changed == _CLOSED
                else "a probe call failed",
                _CLOSED: "a probe call succeeded",
            }
            log_transition(breaker.name, changed, state, reasons.get(state, ""))

    def reset(self) -> None:
        client = self._connect()
        if client is not None:
            try:
                client.delete(*self._keys)
            except Exception:
                self._redis_error()
        self._remember(_CLOSED, 0)

    def reset_after_fork(self) -> None:
        self._client = None
        self._scripts = None

    # -- Redis ----------------------------------------------------------------------

    def _refresh(self) -> None:
        client = self._connect()
        if client is None:
            return
        try:
            state, failures = client.hmget(self._keys[0], ["state", "failures"])
        except Exception:
            self._redis_error()
            return
        self._remember(_decode_state(state), int(failures or 0))

    def _remember(self, state: object, failures: object) -> None:
        self._cached = _decode_state(state)
        self._cached_failures = int(cast("int", failures) or 0)
        self._cached_at = time.monotonic()

    def _run(self, which: int, args: list[Any]) -> list[Any] | None:
        client = self._connect()
        if client is None or self._scripts is None:
            return None
        try:
            raw = self._scripts[which](keys=self._keys, args=args)
        except Exception:
            self._redis_error()
            return None
        return [item.decode() if isinstance(item, bytes) else item for item in raw]

    def _connect(self) -> redis.Redis | redis.cluster.RedisCluster | None:
        if time.monotonic() - self._redis_failed_at < self._sync_interval:
            return None
        if self._client is None:
            try:
                client = redis_client(self._url, self._timeout)
                self._scripts = (
                    client.register_script(_ALLOW_SCRIPT),
                    client.register_script(_RECORD_SCRIPT),
                )
            except Exception:  # a cluster with no node answering fails here
                self._redis_error()
                return None
            self._client = client
        return self._client

    def _redis_error(self) -> None:
        first = time.monotonic() - self._redis_failed_at > 60.0
        self._redis_failed_at = time.monotonic()
        if first:
            try:
                import structlog

                structlog.get_logger(_LOGGER_NAME).warning(
                    "circuit_state_unavailable",
                    circuit=self._breaker.name,
                    detail="Redis did not answer; calls go through until it does",
                )
            except Exception:  # noqa: S110 - a log call never raises into the caller
                pass


def redis_client(url: str, timeout: float) -> redis.Redis | redis.cluster.RedisCluster:
    """A Redis client for *url* from the kit's one client factory (one server, TLS,
    Sentinel or Cluster): bounded timeouts, no retries of its own."""
    from ._active import active_settings_or_none
    from ._redis_clients import parse_redis_url, redis_client, tls_options_from_settings

    settings = active_settings_or_none()
    tls = tls_options_from_settings(settings) if settings is not None else None
    return redis_client(parse_redis_url(url, tls_defaults=tls), timeout=timeout, max_connections=16)


def _decode_state(value: object) -> State:
    if isinstance(value, bytes):
        value = value.decode()
    if value == _OPEN:
        return _OPEN
    if value == _HALF_OPEN:
        return _HALF_OPEN
    return _CLOSED


def _check_arguments(
    name: object,
    failures: object,
    failure_ratio: object,
    window: object,
    minimum_calls: object,
    recovery_timeout: object,
    half_open_calls: object,
) -> None:
    if not isinstance(name, str) or not name or len(name) > 200 or "}" in name or "{" in name:
        raise ValueError(
            f"circuit_breaker: name {name!r} must be a non-empty string of at most 200 "
            "characters without braces, for example 'payments-api'"
        )
    for label, value in (
        ("failures", failures),
        ("minimum_calls", minimum_calls),
        ("half_open_calls", half_open_calls),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"circuit_breaker {name!r}: {label} must be an int >= 1, got {value!r}"
            )
    for label, value in (("window", window), ("recovery_timeout", recovery_timeout)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(
                f"circuit_breaker {name!r}: {label} must be a positive number of seconds, "
                f"got {value!r}"
            )
    if failure_ratio is not None and (
        isinstance(failure_ratio, bool)
        or not isinstance(failure_ratio, (int, float))
        or not 0 < failure_ratio <= 1
    ):
        raise ValueError(
            f"circuit_breaker {name!r}: failure_ratio must be in (0, 1], got {failure_ratio!r}"
        )


def circuit_breaker(
    name: str,
    *,
    failures: int = 5,
    failure_ratio: float | None = None,
    window: float = 60.0,
    minimum_calls: int = 10,
    recovery_timeout: float = 30.0,
    half_open_calls: int = 1,
    failure_on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
    redis_url: str | None = None,
    sync_interval: float = 0.5,
) -> CircuitBreaker:
    """A circuit breaker named *name*, usable as a decorator or a context manager.

    It opens after *failures* consecutive failures, or (with *failure_ratio*) when that
    share of the calls of the last *window* seconds failed, counting once there are
    *minimum_calls*. Open, every call raises `CircuitOpenError` without being made.
    After *recovery_timeout* seconds, up to *half_open_calls* probe calls go through:
    a success closes the circuit, a failure opens it again. Only exceptions of the
    types *failure_on* count as failures; others pass through as successes.

    With *redis_url*, the state lives in Redis and is shared by every process using the
    same name; the local copy of it is trusted for *sync_interval* seconds. Each change
    of state is logged once (``circuit_state_changed``).

    Raises `ValueError` for an invalid argument.

    Examples:
        >>> import backend_kit
        >>> breaker = backend_kit.circuit_breaker("doc-example", failures=3)
        >>> @breaker
        ... def fetch() -> str:
        ...     return "ok"
        >>> fetch(), breaker.state
        ('ok', 'closed')
    """
    return CircuitBreaker(
        name,
        failures=failures,
        failure_ratio=failure_ratio,
        window=window,
        minimum_calls=minimum_calls,
        recovery_timeout=recovery_timeout,
        half_open_calls=half_open_calls,
        failure_on=failure_on,
        redis_url=redis_url,
        sync_interval=sync_interval,
    )


def open_circuits() -> list[CircuitBreaker]:
    """The breakers of this process that are not closed, for the health report."""
    with _breakers_lock:
        breakers = list(_breakers)
    return [breaker for breaker in breakers if breaker.state != _CLOSED]


#: Called by `forget_breakers`: modules that keep breakers of their own drop them.
forget_hooks: list[Callable[[], None]] = []


def forget_breakers() -> None:
    """Stop listing every breaker made so far in the health report (their state is
    left as it is), and let modules that keep breakers drop theirs."""
    with _breakers_lock:
        _breakers.clear()
    for hook in forget_hooks:
        hook()


@after_fork_in_child
def _reset_after_fork() -> None:
    global _breakers_lock
    _breakers_lock = threading.Lock()
    for breaker in list(_breakers):
        breaker._reset_after_fork()
