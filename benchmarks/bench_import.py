"""Import cost of backend_kit beside the two libraries it stands on, with -X importtime.

    python benchmarks/bench_import.py [--runs 7] [--json PATH]

Each figure is the median over ``--runs`` fresh interpreters of the summed cumulative
time of the statement's top-level imports, as ``python -X importtime`` reports it.
Targets (the script exits 1 when one is missed):

* ``from backend_kit import *`` (every public name, so every module they need) costs at
  most 1.2x ``import structlog, pydantic_settings``;
* importing the pytest plugin, with pytest already imported, costs at most 50 ms;
* none of them imports sentry_sdk, flask, django, redis, psycopg or an optional
  integration (HTTP clients, Celery, metrics, OpenTelemetry).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

from _report import Results, add_json_option

OPTIONAL = (
    "sentry_sdk",
    "flask",
    "django",
    "redis",
    "psycopg",
    "httpx",
    "requests",
    "urllib3",
    "aiohttp",
    "celery",
    "kombu",
    "prometheus_client",
    "opentelemetry",
    "tenacity",
)


def import_microseconds(setup: str, statement: str) -> tuple[float, set[str]]:
    """The cumulative import time of *statement*'s top-level imports, after *setup*, and
    the optional packages loaded by then."""
    marker = "import time: backend_kit-bench-marker"
    code = (
        f"{setup}\nimport sys\nsys.stderr.write('{marker}\\n')\n{statement}\n"
        f"print(','.join(sorted({{m.split('.')[0] for m in sys.modules}} & {set(OPTIONAL)!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    lines = done.stderr.splitlines()
    lines = lines[lines.index(marker) + 1 :]
    total = 0
    for line in lines:
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if name.startswith(" ") and not name.startswith("  "):  # top level: one space
            total += int(cumulative)
    loaded = {name for name in done.stdout.strip().split(",") if name}
    return float(total), loaded


def median_of(runs: int, setup: str, statement: str) -> tuple[float, set[str]]:
    figures: list[float] = []
    loaded: set[str] = set()
    for _ in range(runs):
        micros, optional = import_microseconds(setup, statement)
        figures.append(micros)
        loaded |= optional
    return statistics.median(figures), loaded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("bench_import")

    base, _ = median_of(args.runs, "", "import structlog, pydantic_settings")
    package, package_loaded = median_of(args.runs, "", "import backend_kit")
    public, public_loaded = median_of(args.runs, "", "from backend_kit import *")
    plugin, plugin_loaded = median_of(
        args.runs, "import pytest", "import backend_kit.pytest_plugin"
    )

    print(f"median of {args.runs} runs, milliseconds (-X importtime, cumulative):")
    print(f"  {base / 1000:8.1f}  import structlog, pydantic_settings")
    print(f"  {package / 1000:8.1f}  import backend_kit")
    print(f"  {public / 1000:8.1f}  from backend_kit import *")
    print(f"  {plugin / 1000:8.1f}  import backend_kit.pytest_plugin (pytest imported)")
    ratio = public / base
    missed: list[str] = []
    print(f"\nfrom backend_kit import * / structlog + pydantic_settings: {ratio:.3f}x (<= 1.2x)")
    if ratio > 1.2:
        missed.append("import ratio")
    print(f"pytest plugin: {plugin / 1000:.1f} ms (<= 50 ms)")
    if plugin > 50_000:
        missed.append("pytest plugin")
    loaded = package_loaded | public_loaded | plugin_loaded
    print(f"optional packages imported: {', '.join(sorted(loaded)) or 'none'}")
    if loaded:
        missed.append("optional packages imported")

    results.absolute("import structlog, pydantic_settings", base / 1000, "ms", better="lower")
    results.absolute("import backend_kit", package / 1000, "ms", better="lower")
    results.absolute("from backend_kit import *", public / 1000, "ms", better="lower")
    results.absolute(
        "import backend_kit.pytest_plugin", plugin / 1000, "ms", target=50, better="lower"
    )
    results.ratio(
        "from backend_kit import * / import structlog, pydantic_settings",
        ratio,
        target=1.2,
        better="lower",
    )
    results.write(args.json)
    if missed:
        print(f"missed: {', '.join(missed)}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
