"""What dependency faults cost under load: both example apps under gunicorn (2 workers x
12 threads, 8 load clients, /readyz probed every 50 ms) while a TCP proxy cuts and then
hangs their dependency, with Sentry pointed at an endpoint that never answers.

- cache: the Flask example, its shared cache on a throwaway redis-server behind the
  proxy; "downstream calls" are the calls that reached the exchange-rate service.
- database: the Django example on PostgreSQL (a schema of its own) behind the proxy,
  DATABASE_STATEMENT_TIMEOUT=0.5 (read timeout 1.5 s), connect timeout 2 s.
- sqlite: the Flask example while another process holds an EXCLUSIVE lock on its
  database file (the "hang" phase); requests wait for the lock up to the statement
  timeout.

Prints, per phase (before, during, after each fault): requests, errors, p50/p99/max
latency, how long /readyz took to turn, how often it changed, downstream calls. Exits
non-zero when a fault costs more than the timeouts allow: a cache fault fails a
request, a database request outlasts read + connect timeout (+1.5 s), /readyz takes
more than 1 s to report a fault or 2 s to report recovery, or flaps.

Run from the repository root, with PostgreSQL on 127.0.0.1:5432 (``DATABASE_URL``) and
redis-server installed: ``.venv/bin/python benchmarks/faults.py``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import harness
from tests.faults.harness import ScenarioResult


def problems(result: ScenarioResult, *, cache: bool) -> list[str]:
    found = []
    bound = harness.READ_TIMEOUT + harness.CONNECT_TIMEOUT + 1.5
    for phase in result.phases:
        if cache and phase.errors:
            found.append(f"{result.name} {phase.name}: {len(phase.errors)} failed requests")
        slowest = max((s.latency for s in phase.samples), default=0.0)
        if not cache and slowest > bound:
            found.append(f"{result.name} {phase.name}: a request took {slowest:.2f} s")
        if phase.name == "before":
            continue
        expected, within = (200, 2.0) if phase.mode == "pass" else (503, 1.0)
        first = phase.first_probe(expected)
        if first is None or first > within:
            found.append(f"{result.name} {phase.name}: /readyz {expected} after {first} s")
        if phase.probe_changes() > 1:
            found.append(f"{result.name} {phase.name}: readiness flapped")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["cache", "database", "sqlite"], help="run one scenario")
    args = parser.parse_args()
    results: list[tuple[ScenarioResult, bool]] = []
    with tempfile.TemporaryDirectory(prefix="bk-faults-") as tmp:
        for name, scenario, cache in (
            ("cache", harness.cache_scenario, True),
            ("database", harness.database_scenario, False),
            ("sqlite", harness.sqlite_scenario, False),
        ):
            if args.only in (None, name):
                workdir = Path(tmp) / name
                workdir.mkdir()
                results.append((scenario(workdir), cache))
    print(harness.table([result for result, _ in results]))
    found = [problem for result, cache in results for problem in problems(result, cache=cache)]
    for problem in found:
        print(f"MISSED: {problem}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
