"""Readiness with every dependency hung, default settings: the time to the 503.

    python benchmarks/bench_health_deadline.py [--runs 5] [--json PATH]

PostgreSQL and Redis are each replaced by a loopback server that accepts connections
and never answers. Each run builds a fresh runner from default settings (so nothing is
served from the result cache) and times one readiness probe. The target is Kubernetes'
default probe timeout: every run answers 503 within 1.0 s, or the script exits 1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _report import Results, add_json_option
from _servers import silent_tcp_port

from backend_kit import load_settings
from backend_kit.health import HealthRunner

TARGET_SECONDS = 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("bench_health_deadline")
    with silent_tcp_port() as pg_port, silent_tcp_port() as redis_port:
        settings = load_settings(
            database_url=f"postgresql://app:secret@127.0.0.1:{pg_port}/app",
            cache_url=f"redis://127.0.0.1:{redis_port}/0",
        )
        print(
            f"HEALTH_CHECK_TIMEOUT={settings.health_check_timeout} s, "
            f"HEALTH_DEADLINE={settings.health_deadline} s (defaults)"
        )
        durations: list[float] = []
        for _ in range(args.runs):
            runner = HealthRunner.from_settings(settings)
            started = time.perf_counter()
            report = runner.ready()
            durations.append(time.perf_counter() - started)
            failed = sorted(c.check.name for c in report.checks if c.status == "fail")
            if report.http_status != 503:
                print(f"expected 503, got {report.http_status}: {report.to_dict(detailed=True)}")
                sys.exit(1)
    median, worst = statistics.median(durations), max(durations)
    print(f"failed checks: {', '.join(failed)}")
    print(
        f"readiness 503 after: median {median:.3f} s, worst {worst:.3f} s over {args.runs} runs "
        f"(target <= {TARGET_SECONDS:.1f} s)"
    )
    results.absolute(
        "readiness, every dependency hung: median", median * 1000, "ms", better="lower"
    )
    results.absolute(
        "readiness, every dependency hung: worst",
        worst * 1000,
        "ms",
        target=TARGET_SECONDS * 1000,
        better="lower",
    )
    results.write(args.json)
    if worst > TARGET_SECONDS:
        print("target missed")
        sys.exit(1)


if __name__ == "__main__":
    main()
