"""Cost of a readiness probe with backend_kit versus the raw client calls it wraps.

Run against the loopback services:

    .venv/bin/python benchmarks/health_probe.py [--json PATH]

Prints, per dependency, the time of one raw check (a fresh connection with timeouts, a
round trip, close), of one uncached probe through `HealthRunner` (the same work plus a
thread, timeouts and the report), and of one probe served from the result cache, with the
ratios to the raw call.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import psycopg
import redis
from _report import Results, add_json_option

from backend_kit.health import HealthRegistry, HealthRunner, postgres_check, redis_check

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def per_call(function: Callable[[], object], count: int) -> float:
    function()  # warm up
    started = time.perf_counter()
    for _ in range(count):
        function()
    return (time.perf_counter() - started) / count


def raw_redis() -> None:
    client = redis.Redis.from_url(
        REDIS_URL, socket_connect_timeout=2, socket_timeout=2, single_connection_client=True
    )
    try:
        client.ping()
    finally:
        client.close()


def raw_postgres() -> None:
    with psycopg.connect(
        DATABASE_URL, connect_timeout=2, options="-c statement_timeout=1600", autocommit=True
    ) as connection:
        connection.execute("SELECT 1").fetchone()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("health_probe")
    rows = []
    for label, raw, check, count in (
        ("redis PING", raw_redis, redis_check(REDIS_URL, timeout=2), 500),
        ("postgresql SELECT 1", raw_postgres, postgres_check(DATABASE_URL, timeout=2), 200),
    ):
        registry = HealthRegistry([check])
        uncached = HealthRunner(registry, cache_seconds=0)
        cached = HealthRunner(registry, cache_seconds=60)
        raw_time = per_call(raw, count)
        uncached_time = per_call(uncached.ready, count)
        cached_time = per_call(cached.ready, count * 20)
        rows.append((label, raw_time, uncached_time, cached_time))

    print(f"{'dependency':<22}{'raw':>12}{'probe':>12}{'ratio':>8}{'cached':>12}{'ratio':>8}")
    for label, raw_time, uncached_time, cached_time in rows:
        print(
            f"{label:<22}{raw_time * 1e6:>10.0f}us{uncached_time * 1e6:>10.0f}us"
            f"{uncached_time / raw_time:>7.2f}x{cached_time * 1e6:>10.1f}us"
            f"{cached_time / raw_time:>7.3f}x"
        )
        for name, seconds in (
            ("raw check", raw_time),
            ("probe", uncached_time),
            ("cached probe", cached_time),
        ):
            results.absolute(f"{label}: {name}", seconds * 1e6, "µs", better="lower")
        results.ratio(f"{label}: probe / raw check", uncached_time / raw_time, better="lower")
        results.ratio(f"{label}: cached probe / raw check", cached_time / raw_time, better="lower")
    results.write(args.json)


if __name__ == "__main__":
    main()
