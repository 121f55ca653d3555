"""Single-flight: concurrent misses on one key run the loader once, in one process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar, cast

import structlog

from backend_kit._forksafe import reset_in_child

__all__ = ["BUSY", "AsyncSingleFlight", "ReentrantCacheCallError", "SingleFlight"]

T = TypeVar("T")
logger = structlog.get_logger("backend_kit.cache")

#: How long a caller waits for another caller's load of the same key before loading
#: the value itself: a loader that hangs must not hang every caller behind it.
DEFAULT_WAIT_TIMEOUT = 60.0

# Left in a flight whose leader was interrupted (KeyboardInterrupt, task cancellation):
# its waiters start a new flight instead of inheriting an interruption not meant for them.
_INTERRUPTED: Any = object()

#: Returned by ``try_run`` when another caller is already loading the key.
BUSY: Any = object()


class ReentrantCacheCallError(RuntimeError):
    """A cached function called itself, directly or indirectly, with the same key while
    that key was being loaded. Waiting for itself would deadlock, so this is raised."""


def _reentrant(key: Hashable) -> ReentrantCacheCallError:
    return ReentrantCacheCallError(
        f"cache key {key!r} is already being loaded by this same call stack: the loader "
        "calls itself with the same arguments, which would wait for itself forever; "
        "break the recursion or give the inner call different arguments"
    )


class _Flight:
    __slots__ = ("done", "error", "owner", "value")

    def __init__(self, owner: int) -> None:
        self.done = threading.Event()
        self.owner = owner
        self.value: Any = _INTERRUPTED
        self.error: BaseException | None = None


def _waited_too_long(waited: float) -> None:
    logger.warning(
        "cache_load_wait_timeout",
        waited=waited,
        effect="the load this call waited for is still running; this call loads the value itself",
    )


class SingleFlight:
    """Coalesces concurrent loads of one key across the threads of a process. A
    caller waits at most *wait_timeout* seconds for another's load, then loads itself."""

    def __init__(self, wait_timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        self.wait_timeout = wait_timeout
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}
        reset_in_child(self)

    def _reset_after_fork(self) -> None:
        # Flights in progress belong to the parent's threads: waiters here would wait forever.
        self._lock = threading.Lock()
        self._flights = {}

    def run(self, key: Hashable, loader: Callable[[], T]) -> T:
        """Run *loader* unless another thread is already loading *key*; then wait for
        that thread and return its value, or raise its exception."""
        me = threading.get_ident()
        while True:
            with self._lock:
                flight = self._flights.get(key)
                if flight is None:
                    flight = self._flights[key] = _Flight(me)
                    break
            if flight.owner == me:
                raise _reentrant(key)
            if not flight.done.wait(self.wait_timeout):
                _waited_too_long(self.wait_timeout)
                return loader()
            if flight.error is not None:
                raise flight.error
            if flight.value is not _INTERRUPTED:
                return cast("T", flight.value)
        try:
            value = loader()
        except Exception as exc:
            flight.error = exc
            raise
        else:
            flight.value = value
            return value
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()

    def try_run(self, key: Hashable, loader: Callable[[], T]) -> T:
        """Run *loader* as `run` does, unless *key* is already being loaded: then return
        `BUSY` at once instead of waiting."""
        with self._lock:
            if key in self._flights:
                return cast("T", BUSY)
        return self.run(key, loader)


class _AsyncFlight:
    __slots__ = ("future", "owner")

    def __init__(self, future: asyncio.Future[Any], owner: asyncio.Task[Any] | None) -> None:
        self.future = future
        self.owner = owner


class AsyncSingleFlight:
    """Coalesces concurrent loads of one key across the tasks of an event loop. A task
    waits at most *wait_timeout* seconds for another's load, then loads itself."""

    def __init__(self, wait_timeout: float = DEFAULT_WAIT_TIMEOUT) -> None:
        self.wait_timeout = wait_timeout
        # Keyed by loop too: a future belongs to one loop, and several threads may each
        # run their own.
        self._flights: dict[tuple[asyncio.AbstractEventLoop, Hashable], _AsyncFlight] = {}
        reset_in_child(self)

    def _reset_after_fork(self) -> None:
        self._flights = {}

    async def run(self, key: Hashable, loader: Callable[[], Awaitable[T]]) -> T:
        """Await *loader* unless another task is already loading *key*; then wait for
        that task and return its value, or raise its exception."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        slot = (loop, key)
        while True:
            flight = self._flights.get(slot)
            if flight is None:
                flight = self._flights[slot] = _AsyncFlight(loop.create_future(), task)
                break
            if flight.owner is task:
                raise _reentrant(key)
            # shield: a waiter being cancelled must not cancel the flight of the others.
            try:
                value = await asyncio.wait_for(asyncio.shield(flight.future), self.wait_timeout)
            except asyncio.TimeoutError:
                _waited_too_long(self.wait_timeout)
                return await loader()
            if value is not _INTERRUPTED:
                return cast("T", value)
        future = flight.future
        try:
            value = await loader()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marks it retrieved: no "never retrieved" noise without waiters
            raise
        except BaseException:
            future.set_result(_INTERRUPTED)
            raise
        else:
            future.set_result(value)
            return value
        finally:
            if self._flights.get(slot) is flight:
                del self._flights[slot]

    async def try_run(self, key: Hashable, loader: Callable[[], Awaitable[T]]) -> T:
        """Await *loader* as `run` does, unless *key* is already being loaded: then
        return `BUSY` at once instead of waiting."""
        if (asyncio.get_running_loop(), key) in self._flights:
            return cast("T", BUSY)
        return await self.run(key, loader)
