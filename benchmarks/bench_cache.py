"""Cache benchmarks: backend_kit side by side with the raw libraries, in one run.

    python benchmarks/bench_cache.py [--redis-url redis://127.0.0.1:6379/0] [--json PATH]

Prints per-call times and ratios for a memory hit (vs ``cachetools.cached`` with the
same cache type and a lock), a Redis hit (vs redis-py ``GET`` plus ``orjson.loads``),
the wall time of a 32-thread stampede on a 50 ms loader, and the number of loads when
4 processes x 8 threads miss one Redis key together.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import threading
import time
import timeit
import uuid
from collections.abc import Callable
from typing import Any

import cachetools
import orjson
import redis
from _report import Results, add_json_option
from redis.backoff import NoBackoff
from redis.retry import Retry

from backend_kit import MemoryCache, RedisCache, cached

results = Results("bench_cache")


def side_by_side(
    raw: Callable[[], Any], ours: Callable[[], Any], number: int, rounds: int = 15
) -> tuple[float, float]:
    """Microseconds per call of *raw* and *ours*: timed in alternating rounds (so load
    from other processes hits both alike), best round of each."""
    raw_best = ours_best = float("inf")
    for _ in range(rounds):
        raw_best = min(raw_best, timeit.timeit(raw, number=number))
        ours_best = min(ours_best, timeit.timeit(ours, number=number))
    return raw_best / number * 1e6, ours_best / number * 1e6


def bench_memory_hit() -> None:
    def ttu(_key: Any, _value: Any, now: float) -> float:
        return now + 60

    @cachetools.cached(
        cachetools.TLRUCache(1024, ttu=ttu, timer=time.monotonic), lock=threading.Lock()
    )
    def raw(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    @cached(ttl=60, cache=MemoryCache(1024))
    def ours(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    raw(42), ours(42)
    t_raw, t_ours = side_by_side(lambda: raw(42), lambda: ours(42), 50_000)
    print(
        f"memory hit     cachetools.cached+lock {t_raw:7.2f} us   "
        f"backend_kit {t_ours:7.2f} us   ratio {t_ours / t_raw:.2f}x (target <= 1.5x)"
    )
    results.absolute("memory hit: cachetools.cached + lock", t_raw, "µs/call", better="lower")
    results.absolute("memory hit: backend_kit", t_ours, "µs/call", better="lower")
    results.ratio(
        "memory hit: backend_kit / cachetools.cached + lock",
        t_ours / t_raw,
        target=1.5,
        better="lower",
    )


def bench_redis_hit(url: str, prefix: str) -> None:
    cache = RedisCache(url, prefix=prefix)
    # Configured as RedisCache configures its client: same timeouts, no client retries.
    client = redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    value = {"id": 42, "name": "Ada Lovelace", "roles": ["admin", "author"]}
    client.set(prefix + "raw", orjson.dumps(value))

    @cached(ttl=60, cache=cache)
    def ours(user_id: int) -> dict[str, Any]:
        return value

    assert ours(42) == orjson.loads(client.get(prefix + "raw"))  # type: ignore[arg-type]
    t_raw, t_ours = side_by_side(
        lambda: orjson.loads(client.get(prefix + "raw")),  # type: ignore[arg-type]
        lambda: ours(42),
        1_000,
    )
    print(
        f"redis hit      redis-py GET+orjson    {t_raw:7.2f} us   "
        f"backend_kit {t_ours:7.2f} us   ratio {t_ours / t_raw:.2f}x (target <= 1.2x)"
    )
    results.absolute("Redis hit: redis-py GET + orjson", t_raw, "µs/call", better="lower")
    results.absolute("Redis hit: backend_kit", t_ours, "µs/call", better="lower")
    results.ratio(
        "Redis hit: backend_kit / redis-py GET + orjson",
        t_ours / t_raw,
        target=1.2,
        better="lower",
    )
    cache.clear()
    client.delete(prefix + "raw")
    client.close()
    cache.close()


def bench_stampede() -> None:
    loads = 0

    @cached(ttl=60, cache=MemoryCache())
    def slow() -> int:
        nonlocal loads
        loads += 1
        time.sleep(0.05)
        return 1

    barrier = threading.Barrier(33)
    threads = [threading.Thread(target=lambda: (barrier.wait(), slow())) for _ in range(32)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = (time.perf_counter() - started) * 1000
    print(
        f"stampede       32 threads, 50 ms loader: {wall:6.1f} ms wall, "
        f"{loads} load(s) (target < 100 ms, 1 load)"
    )
    results.absolute(
        "stampede, 32 threads on a 50 ms loader: wall time", wall, "ms", target=100, better="lower"
    )
    results.absolute(
        "stampede, 32 threads on a 50 ms loader: loads", loads, "load(s)", target=1, better="lower"
    )


_WORKER = textwrap.dedent(
    """
    import sys, threading, time
    from backend_kit import RedisCache
    url, prefix, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    cache = RedisCache(url, prefix=prefix)
    def load():
        cache.client.incr(prefix + "loads")
        time.sleep(0.05)
        return "v"
    def call():
        cache.get_or_set("hot", load, ttl=60)
    threads = [threading.Thread(target=call) for _ in range(8)]
    time.sleep(max(0.0, start - time.time()))
    for t in threads: t.start()
    for t in threads: t.join()
    """
)


def bench_processes(url: str, prefix: str) -> None:
    start = time.time() + 2.0
    processes = [
        subprocess.Popen([sys.executable, "-c", _WORKER, url, prefix, str(start)]) for _ in range(4)
    ]
    for process in processes:
        process.wait(60)
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    loads = int(client.get(prefix + "loads") or 0)
    wall = (time.time() - start) * 1000
    print(
        f"processes      4 processes x 8 threads on Redis: {loads} load(s), "
        f"{wall:.0f} ms until all exited (target 1 load)"
    )
    results.absolute(
        "4 processes x 8 threads on Redis: loads", loads, "load(s)", target=1, better="lower"
    )
    results.absolute(
        "4 processes x 8 threads on Redis: until all exited", wall, "ms", better="lower"
    )
    RedisCache(url, prefix=prefix).clear()
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    add_json_option(parser)
    args = parser.parse_args()
    prefix = f"bk-bench-{uuid.uuid4().hex[:8]}:"
    bench_memory_hit()
    bench_redis_hit(args.redis_url, prefix)
    bench_stampede()
    bench_processes(args.redis_url, prefix + "p:")
    results.write(args.json)


if __name__ == "__main__":
    main()
