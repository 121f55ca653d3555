"""Redis deployments: a cache hit on a Cluster and over TLS beside a raw redis-py client
of the same kind, in one run; and a Sentinel failover under load.

    python benchmarks/bench_redis_deployments.py [--json PATH]

Starts its own redis-server processes on free loopback ports (a three-master Cluster,
a TLS-only server with a private CA and a client certificate, a master with a replica
and three Sentinels); needs redis-server, redis-cli and openssl.

- Cluster hit: a `cached` function's hit against `redis.cluster.RedisCluster` ``GET``
  plus ``orjson.loads``; TLS hit: against `redis.Redis` over TLS ``GET`` plus
  ``orjson.loads``. The raw client is made by the same factory as the cache's own (same
  timeouts, no retries) and reads the same JSON, stored under a key with the same hash
  tag, so both sides talk to the same node of the cluster. The sides run in paired,
  interleaved rounds (each first in every other round); the verdict is the median of
  the per-round ratios, the best round of each side is shown beside it. Target: at most
  1.1x each.
- Failover: 4 threads call a cached function on 20 keys while the master is killed;
  prints the time until Sentinel promotes the replica, the time until the cache is
  back on Redis, the errors (target 0) and the loads during the switch.

Exits with status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.cluster
from _report import Results, add_json_option

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.redis_deployments import redis_cluster, sentinel_group, tls_redis_server

from backend_kit import RedisCache, cached
from backend_kit._cache._keys import function_name
from backend_kit._redis_clients import parse_redis_url, redis_client

results = Results("bench_redis_deployments")
TARGET = 1.1
VALUE = {"id": 42, "name": "Ada Lovelace", "roles": ["admin", "author"]}


def paired_rounds(
    raw: Callable[[], Any], ours: Callable[[], Any], number: int, rounds: int
) -> tuple[float, float, float]:
    """Microseconds per call of *raw* and *ours* (the best round of each) and the
    median of the per-round ratios ours / raw. Each round times both sides back to
    back, so load from other processes hits both alike, each going first in every
    other round (the second of a pair tends to run slower)."""
    raw_times: list[float] = []
    our_times: list[float] = []
    for round_number in range(rounds):
        if round_number % 2:
            our_times.append(timeit.timeit(ours, number=number) / number * 1e6)
            raw_times.append(timeit.timeit(raw, number=number) / number * 1e6)
        else:
            raw_times.append(timeit.timeit(raw, number=number) / number * 1e6)
            our_times.append(timeit.timeit(ours, number=number) / number * 1e6)
    ratios = [o / r for o, r in zip(our_times, raw_times, strict=True)]
    return min(raw_times), min(our_times), statistics.median(ratios)


def bench_hit(label: str, url: str, rounds: int) -> bool:
    cache = RedisCache(url, prefix="bk-bench:")
    # The raw client of the same kind, built with the same policy (timeouts, no retries).
    client = redis_client(parse_redis_url(url), timeout=cache.timeout)

    @cached(ttl=600, cache=cache)
    def ours(user_id: int) -> dict[str, Any]:
        return VALUE

    # The raw side reads the same JSON under a key with the cached value's hash tag:
    # the same slot, so the same node of a cluster.
    value_key = cache._key("default", f"{function_name(ours)}:[42]")
    raw_key = value_key + ":raw"
    client.set(raw_key, orjson.dumps(VALUE))

    def raw() -> Any:
        return orjson.loads(client.get(raw_key))  # type: ignore[arg-type]

    assert ours(42) == raw()
    assert client.exists(value_key) == 1  # the hit below is a hit in Redis
    if isinstance(client, redis.cluster.RedisCluster):
        assert client.keyslot(raw_key) == client.keyslot(value_key)
    paired_rounds(raw, lambda: ours(42), 200, 2)  # warm both up
    t_raw, t_ours, ratio = paired_rounds(raw, lambda: ours(42), 300, rounds)
    assert cache.fallbacks == 0
    met = ratio <= TARGET
    print(
        f"{label:13} raw GET+orjson {t_raw:7.2f} us   backend_kit {t_ours:7.2f} us   "
        f"(best of {rounds} rounds, ratio {t_ours / t_raw:.2f}x)   median ratio "
        f"{ratio:.2f}x (target <= {TARGET}x) {'ok' if met else 'MISSED'}"
    )
    results.absolute(f"{label}: redis-py GET + orjson", t_raw, "µs/call", better="lower")
    results.absolute(f"{label}: backend_kit", t_ours, "µs/call", better="lower")
    results.ratio(f"{label}: backend_kit / redis-py", ratio, target=TARGET, better="lower")
    cache.clear()
    client.delete(raw_key)
    client.close()
    cache.close()
    return met


def bench_failover() -> bool:
    with sentinel_group(down_after_ms=500, failover_timeout_ms=2000) as group:
        cache = RedisCache(
            group.url, prefix="bk-failover:", timeout=0.3, probe_interval=0.2, warn_interval=60
        )
        loads: list[float] = []

        @cached(ttl=300, cache=cache)
        def price(item: int) -> int:
            loads.append(time.monotonic())
            time.sleep(0.01)
            return item * 10

        for item in range(20):
            price(item)
        master = redis.Redis(port=group.master.port, socket_timeout=5)
        master.execute_command("WAIT", 1, 5000)
        master.close()
        errors: list[BaseException] = []
        answered = [0]
        stop = threading.Event()

        def call_in_a_loop() -> None:
            deadline = time.monotonic() + 60
            while not stop.is_set() and time.monotonic() < deadline:
                for item in range(20):
                    try:
                        if price(item) != item * 10:
                            raise AssertionError("wrong value")
                        answered[0] += 1
                    except BaseException as exc:
                        errors.append(exc)
                time.sleep(0.002)

        threads = [threading.Thread(target=call_in_a_loop) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        killed_at = time.monotonic()
        group.master.kill()
        promoted_at = recovered_at = None
        while time.monotonic() < killed_at + 30 and recovered_at is None:
            if promoted_at is None and group.master_port() == group.replica.port:
                promoted_at = time.monotonic()
            if promoted_at is not None and not cache.breaker.failing:
                recovered_at = time.monotonic()
            time.sleep(0.02)
        time.sleep(1.0)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        cache.close()
    if promoted_at is None or recovered_at is None:
        print("failover     did not complete within 30 s")
        return False
    during = sum(1 for at in loads if killed_at <= at <= recovered_at)
    print(
        f"failover     promoted after {promoted_at - killed_at:.2f} s, cache back on Redis "
        f"after {recovered_at - killed_at:.2f} s; {answered[0]} cached calls, "
        f"{len(errors)} errors (target 0), {during} loads of 20 keys during the switch, "
        f"{cache.fallbacks} answers from the memory tier"
    )
    results.absolute("Sentinel: time to promotion", promoted_at - killed_at, "s", better="lower")
    results.absolute(
        "Sentinel: time until the cache is back on Redis",
        recovered_at - killed_at,
        "s",
        better="lower",
    )
    results.absolute("Sentinel: errors of cached calls", len(errors), "", target=0, better="lower")
    results.absolute("Sentinel: loads during the switch (20 keys)", during, "", better="lower")
    return not errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_json_option(parser)
    parser.add_argument("--rounds", type=int, default=40, help="paired rounds per hit figure")
    parser.add_argument("--skip-failover", action="store_true", help="only the hit figures")
    args = parser.parse_args()
    import structlog

    # The outage warnings of the failover phase would bury the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(50))
    met = True
    with redis_cluster() as cluster:
        met = bench_hit("cluster hit", cluster.url, args.rounds) and met
    with tls_redis_server() as server:
        met = bench_hit("TLS hit", server.url(), args.rounds) and met
    if not args.skip_failover:
        met = bench_failover() and met
    results.write(args.json)
    if not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
