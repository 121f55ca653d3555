"""Async cached calls on Redis: cancelled at each await point, no lock is left held;
every wait has a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from urllib.parse import urlsplit

import pytest
import redis
from structlog.testing import capture_logs

from backend_kit import RedisCache, cached
from backend_kit._cache._flight import AsyncSingleFlight, SingleFlight

pytestmark = pytest.mark.redis


class StallingProxy:
    """Forwards TCP from clients to a Redis server, and holds back for good the reply to
    the *stall_at*-th request (one client write, counted across connections): the
    command has run on the server, its caller is left waiting at that await."""

    def __init__(self, target: tuple[str, int], stall_at: int) -> None:
        self.target = target
        self.stall_at = stall_at
        self.requests = 0
        self.stalled = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self._closing = threading.Event()
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=5)
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            stalled = threading.Event()
            threading.Thread(target=self._upstream, args=(client, server, stalled)).start()
            threading.Thread(target=self._downstream, args=(server, client, stalled)).start()

    def _upstream(
        self, client: socket.socket, server: socket.socket, stall: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    self.requests += 1
                    if self.requests == self.stall_at:
                        stall.set()  # before forwarding: the reply comes after this
                        self.stalled.set()
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _downstream(
        self, server: socket.socket, client: socket.socket, stall: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if not stall.is_set():
                    client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@pytest.fixture
def prefix() -> str:
    return f"bk-cancel-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def direct(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    yield client
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()


def _locks(client: redis.Redis, prefix: str) -> list[bytes]:
    return list(client.scan_iter(match=prefix + "*#lock:*"))


def test_cancelling_at_each_redis_await_leaves_no_lock_held(
    redis_url: str, prefix: str, direct: redis.Redis
) -> None:
    parts = urlsplit(redis_url)
    target = (parts.hostname or "127.0.0.1", parts.port or 6379)
    cancelled_at: list[int] = []
    for stall_at in range(1, 20):
        proxy = StallingProxy(target, stall_at)
        # A long timeout: the held reply is a hang that only the cancellation ends.
        cache = RedisCache(
            f"redis://127.0.0.1:{proxy.port}/{parts.path.strip('/') or 0}",
            prefix=prefix,
            timeout=5.0,
        )
        key = f"k{stall_at}"

        @cached(ttl=60, cache=cache, key=lambda: key)
        async def value() -> str:
            return "loaded"

        try:
            was_cancelled = asyncio.run(_cancel_when_stalled(proxy, value))
        finally:
            cache.close()
            proxy.close()
        assert _locks(direct, prefix) == [], f"a lock is left after a stall at request {stall_at}"
        if not was_cancelled:
            break
        cancelled_at.append(stall_at)
        # And another caller proceeds at once: nothing waits for a lock nobody holds.
        other = RedisCache(redis_url, prefix=prefix, timeout=2.0)
        started = time.monotonic()
        assert other.get_or_set(key, lambda: "other", ttl=60) in {"loaded", "other"}
        assert time.monotonic() - started < 1.0
        other.close()
    # The handshake, the read, the lock claim and the store were each interrupted.
    assert len(cancelled_at) >= 3, cancelled_at


async def _cancel_when_stalled(proxy: StallingProxy, value: Callable[[], Awaitable[str]]) -> bool:
    """Start *value()*; cancel it once the proxy holds a reply back. False when the call
    finished without reaching the held reply."""
    task = asyncio.ensure_future(value())
    deadline = time.monotonic() + 5.0
    while not proxy.stalled.is_set() and not task.done():
        assert time.monotonic() < deadline, "neither stalled nor finished"
        await asyncio.sleep(0.002)
    if task.done():
        assert task.result() == "loaded"
        return False
    # Let the request's write finish, so the call is waiting for the held reply. (A
    # cancellation that lands in redis-py's write can be lost on Python < 3.12, whose
    # asyncio.wait_for swallows it when the write completes at the same moment; the
    # call then goes on normally rather than leaving anything held.)
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5.0)
    return True


def test_cancelling_while_the_loader_runs_releases_the_lock(
    redis_url: str, prefix: str, direct: redis.Redis
) -> None:
    cache = RedisCache(redis_url, prefix=prefix)

    async def scenario() -> None:
        started = asyncio.Event()

        @cached(ttl=60, cache=cache)
        async def slow() -> str:
            started.set()
            await asyncio.sleep(60)
            return "never"

        task = asyncio.create_task(slow())
        await asyncio.wait_for(started.wait(), 5.0)
        assert len(_locks(direct, prefix)) == 1  # the loader runs under the lock
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5.0)

    asyncio.run(scenario())
    assert _locks(direct, prefix) == []
    cache.close()


def test_waiting_for_a_lock_ends_at_its_deadline(
    redis_url: str, prefix: str, direct: redis.Redis
) -> None:
    # A holder elsewhere keeps the lock far longer than this process's lock_ttl.
    cache = RedisCache(redis_url, prefix=prefix, lock_ttl=0.3)
    direct.set(cache._lock_key(cache._key("default", "held")), "someone-else", px=60_000)

    async def async_wait() -> str:
        return await cache.aget_or_set("held", _async_value, ttl=60)

    with capture_logs() as logs:
        started = time.monotonic()
        assert cache.get_or_set("held", lambda: "sync", ttl=60) == "sync"
        assert 0.25 < time.monotonic() - started < 3.0
        cache.delete("held")
        started = time.monotonic()
        assert asyncio.run(async_wait()) == "async"
        assert 0.25 < time.monotonic() - started < 3.0
    events = [log["event"] for log in logs]
    assert events == ["cache_lock_wait_timeout", "cache_lock_wait_timeout"]
    cache.close()


async def _async_value() -> str:
    return "async"


def test_waiting_for_another_load_in_the_process_ends_at_its_deadline() -> None:
    flight = SingleFlight(wait_timeout=0.2)
    release = threading.Event()
    entered = threading.Event()

    def hung() -> str:
        entered.set()
        release.wait(10)
        return "leader"

    leader = threading.Thread(target=lambda: flight.run("k", hung))
    leader.start()
    assert entered.wait(5)
    with capture_logs() as logs:
        started = time.monotonic()
        assert flight.run("k", lambda: "waiter") == "waiter"
        assert 0.15 < time.monotonic() - started < 3.0
    assert [log["event"] for log in logs] == ["cache_load_wait_timeout"]
    release.set()
    leader.join(5)
    assert flight.run("k", lambda: "next") == "next"  # the flight table is clean

    async def scenario() -> None:
        async_flight = AsyncSingleFlight(wait_timeout=0.2)
        gate = asyncio.Event()

        async def hung_async() -> str:
            await gate.wait()
            return "leader"

        leader_task = asyncio.create_task(async_flight.run("k", hung_async))
        await asyncio.sleep(0.01)
        with capture_logs() as logs:
            started = time.monotonic()
            assert await async_flight.run("k", _async_value) == "async"
            assert 0.15 < time.monotonic() - started < 3.0
        assert [log["event"] for log in logs] == ["cache_load_wait_timeout"]
        gate.set()
        assert await leader_task == "leader"

    asyncio.run(scenario())


class _Interrupted(BaseException):
    """Stands for KeyboardInterrupt or SystemExit raised inside a loader."""


def test_a_sync_loader_interrupted_or_failing_releases_the_lock(
    redis_url: str, prefix: str, direct: redis.Redis
) -> None:
    cache = RedisCache(redis_url, prefix=prefix)
    seen_locks: list[int] = []

    def interrupted() -> str:
        seen_locks.append(len(_locks(direct, prefix)))
        raise _Interrupted

    def failing() -> str:
        seen_locks.append(len(_locks(direct, prefix)))
        raise ValueError("the loader failed")

    with pytest.raises(_Interrupted):
        cache.get_or_set("a", interrupted, ttl=60)
    with pytest.raises(ValueError, match="the loader failed"):
        cache.get_or_set("b", failing, ttl=60)
    assert seen_locks == [1, 1]  # each loader ran under the lock
    assert _locks(direct, prefix) == []
    assert cache.get_or_set("a", lambda: "next", ttl=60) == "next"
    cache.close()
