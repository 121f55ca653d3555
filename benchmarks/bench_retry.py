"""Per-call overhead of a retried call that succeeds at once.

Compares, in one run: a bare call, backend_kit's ``@retry`` and tenacity's ``@retry``
with the same stop (10 attempts or 45 s) and wait (exponential backoff with jitter),
for plain and ``async`` functions. Goal: backend_kit's overhead is at most 1/4 of
tenacity's.

Run: ``python benchmarks/bench_retry.py`` (``--number`` and ``--repeat`` to tune,
``--json PATH`` to also write the figures as JSON records).
"""

from __future__ import annotations

import argparse
import asyncio
import timeit
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import tenacity
from _report import Results, add_json_option

import backend_kit

ATTEMPTS, TIMEOUT = 10, 45.0
WAIT_INITIAL, WAIT_MAX, WAIT_JITTER = 0.1, 5.0, 1.0
TARGET = 0.25  # backend_kit's overhead at most a quarter of tenacity's
results = Results("bench_retry")


def tenacity_retry() -> Any:
    return tenacity.retry(
        retry=tenacity.retry_if_exception_type(ConnectionError),
        stop=tenacity.stop_after_attempt(ATTEMPTS) | tenacity.stop_after_delay(TIMEOUT),
        wait=tenacity.wait_exponential(multiplier=WAIT_INITIAL, max=WAIT_MAX)
        + tenacity.wait_random(0, WAIT_JITTER),
        reraise=True,
    )


def backend_kit_retry() -> backend_kit.RetryPolicy:
    return backend_kit.retry(
        on=ConnectionError,
        attempts=ATTEMPTS,
        timeout=TIMEOUT,
        wait_initial=WAIT_INITIAL,
        wait_max=WAIT_MAX,
        wait_jitter=WAIT_JITTER,
    )


def work(x: int) -> int:
    return x + 1


async def async_work(x: int) -> int:
    return x + 1


def best_per_call(fn: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def report(title: str, short: str, bare: float, ours: float, theirs: float) -> float:
    """Print one comparison and record it under *short* (the kind of call)."""
    ours_overhead, theirs_overhead = ours - bare, theirs - bare
    ratio = ours_overhead / theirs_overhead
    print(f"\n{title}")
    print(f"  bare call    {bare * 1e9:8.0f} ns/call")
    results.absolute(f"{short}: bare call", bare * 1e9, "ns/call", better="lower")
    for name, per_call, overhead in (
        ("backend_kit", ours, ours_overhead),
        ("tenacity", theirs, theirs_overhead),
    ):
        print(f"  {name:<12} {per_call * 1e9:8.0f} ns/call   overhead {overhead * 1e9:8.0f} ns")
        results.absolute(f"{short}: {name} overhead", overhead * 1e9, "ns/call", better="lower")
    verdict = "OK" if ratio <= TARGET else "ABOVE TARGET"
    print(f"  overhead ratio backend_kit / tenacity = {ratio:.3f} (target <= {TARGET}): {verdict}")
    return results.ratio(
        f"{short}: overhead backend_kit / tenacity", ratio, target=TARGET, better="lower"
    )


def bench_sync(number: int, repeat: int) -> float:
    ours, theirs = backend_kit_retry()(work), tenacity_retry()(work)
    return report(
        "plain function, first attempt succeeds",
        "plain function",
        best_per_call(lambda: work(1), number, repeat),
        best_per_call(lambda: ours(1), number, repeat),
        best_per_call(lambda: theirs(1), number, repeat),
    )


def bench_block(number: int, repeat: int) -> float:
    ours = backend_kit_retry()
    options = {
        "retry": tenacity.retry_if_exception_type(ConnectionError),
        "stop": tenacity.stop_after_attempt(ATTEMPTS) | tenacity.stop_after_delay(TIMEOUT),
        "wait": tenacity.wait_exponential(multiplier=WAIT_INITIAL, max=WAIT_MAX)
        + tenacity.wait_random(0, WAIT_JITTER),
        "reraise": True,
    }

    def bare() -> int:
        return work(1)

    def ours_block() -> int:
        for attempt in ours.context():
            with attempt:
                return work(1)
        raise AssertionError

    def theirs_block() -> int:
        for attempt in tenacity.Retrying(**options):
            with attempt:
                return work(1)
        raise AssertionError

    return report(
        "block (retry_context / tenacity.Retrying), first attempt succeeds",
        "block",
        best_per_call(bare, number, repeat),
        best_per_call(ours_block, number, repeat),
        best_per_call(theirs_block, number, repeat),
    )


def bench_async(number: int, repeat: int) -> float:
    ours, theirs = backend_kit_retry()(async_work), tenacity_retry()(async_work)

    def runner(fn: Callable[[int], Any]) -> Callable[[], object]:
        async def many() -> None:
            for _ in range(number):
                await fn(1)

        def once() -> None:
            loop.run_until_complete(many())

        return once

    loop = asyncio.new_event_loop()
    try:
        timings = [
            min(timeit.repeat(runner(fn), number=1, repeat=repeat)) / number
            for fn in (async_work, ours, theirs)
        ]
    finally:
        loop.close()
    return report("async function, first attempt succeeds", "async function", *timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings; the best one counts")
    add_json_option(parser)
    args = parser.parse_args()
    print(f"backend_kit {version('backend-kit')}, tenacity {version('tenacity')}")
    ratios = [
        bench_sync(args.number, args.repeat),
        bench_block(args.number, args.repeat),
        bench_async(args.number, args.repeat),
    ]
    results.write(args.json)
    raise SystemExit(0 if all(r <= TARGET for r in ratios) else 1)


if __name__ == "__main__":
    main()
