"""Run every benchmark and regenerate the figures of the performance page.

    python benchmarks/report.py [--quick] [--only bench_flask ...] [--render-only]

``make bench-report`` installs the ``bench`` extra (matplotlib) and runs this. Each script
in ``benchmarks/`` runs in a subprocess of this interpreter with ``--json``, one after
the other, its usual output passed through. The records they write are collected into

* ``docs/assets/performance.json``: the records, which benchmarks ran, and where;
* ``docs/assets/performance.png``: each ratio as a bar, its target marked, by module;
* ``docs/performance.md``: the table between the ``bench-report`` markers.

A benchmark that cannot run (``bench_gunicorn.py`` without ``wrk``, a service that is
down) is listed on the page as not run, with the reason, and the others go on. Missed
targets do not fail the report: they are what the table is for. ``--quick`` uses short
rounds (a rough look, under a minute); ``--render-only`` redraws the page and the plot
from the last ``performance.json`` without measuring anything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict

from _report import Record, met

from backend_kit._redact import Redactor

if TYPE_CHECKING:
    from matplotlib.axes import Axes

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
PAGE = ROOT / "docs" / "performance.md"
RESULTS = ROOT / "docs" / "assets" / "performance.json"
PLOT = ROOT / "docs" / "assets" / "performance.png"
# Paths as the page links them: relative to docs/, where MkDocs resolves them.
PLOT_LINK = "assets/performance.png"
RESULTS_LINK = "assets/performance.json"

START = "<!-- bench-report:start -->"
END = "<!-- bench-report:end -->"

# Libraries whose version moves the figures.
PACKAGES = (
    "backend-kit",
    "flask",
    "django",
    "gunicorn",
    "structlog",
    "tenacity",
    "cachetools",
    "redis",
    "psycopg",
)
TIMEOUT = 900  # seconds per benchmark; the longest (gunicorn) takes about 70 s


@dataclass(frozen=True)
class Benchmark:
    script: str  # file name in benchmarks/
    title: str  # its group on the page and in the plot
    quick: tuple[str, ...] = ()  # arguments for --quick

    @property
    def name(self) -> str:
        return self.script.removesuffix(".py")


BENCHMARKS = (
    Benchmark("bench_import.py", "Import", ("--runs", "5")),
    Benchmark("bench_logging.py", "Logging", ("--calls", "5000", "--repeat", "3")),
    Benchmark(
        "bench_log_lock.py",
        "Log lines across processes",
        ("--calls", "5000", "--repeat", "3", "--lines", "200"),
    ),
    Benchmark("bench_retry.py", "Retries", ("--number", "5000", "--repeat", "3")),
    Benchmark("bench_cache.py", "Caching"),
    Benchmark("bench_redis_deployments.py", "Redis deployments"),
    Benchmark("health_probe.py", "Health probes"),
    Benchmark("bench_health_deadline.py", "Readiness with every dependency hung", ("--runs", "3")),
    Benchmark("bench_flask.py", "Flask, test client", ("--requests", "1000", "--repeat", "3")),
    Benchmark("bench_django.py", "Django, test client", ("--requests", "1000", "--repeat", "3")),
    Benchmark("bench_gunicorn.py", "gunicorn + wrk", ("--duration", "1", "--repeat", "2")),
    Benchmark(
        "bench_metrics.py", "Metrics", ("--requests", "500", "--repeat", "3", "--rounds", "2")
    ),
    Benchmark("bench_http.py", "Outbound HTTP", ("--rounds", "11")),
    Benchmark("bench_celery.py", "Celery tasks", ("--tasks", "50", "--rounds", "5")),
)


class Run(TypedDict):
    """What happened to one benchmark script."""

    benchmark: str
    title: str
    status: Literal["ran", "not run"]
    note: str  # why it did not run; empty when it ran
    seconds: float


class Environment(TypedDict):
    date: str
    python: str
    machine: str
    versions: dict[str, str]
    command: str


class Report(TypedDict):
    environment: Environment
    runs: list[Run]
    records: list[Record]


# ---------------------------------------------------------------------------- running


def run_benchmark(benchmark: Benchmark, *, quick: bool, workdir: Path) -> tuple[Run, list[Record]]:
    """Run one script with ``--json``; its output goes to ours as it comes."""
    output = workdir / f"{benchmark.name}.json"
    command = [sys.executable, str(HERE / benchmark.script), *(benchmark.quick if quick else ())]
    print(f"\n=== {benchmark.script} ({benchmark.title})", flush=True)
    started = time.monotonic()
    note = ""
    try:
        finished = subprocess.run(
            [*command, "--json", str(output)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
            timeout=TIMEOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        note = f"stopped after {TIMEOUT} s"
    else:
        sys.stderr.write(finished.stderr)
        # Without records it did not run; status 1 with records is a missed target.
        if not output.exists():
            lines = [line.strip() for line in finished.stderr.splitlines() if line.strip()]
            note = lines[-1] if lines else f"exited with status {finished.returncode}"
    seconds = round(time.monotonic() - started, 1)
    if note:
        # The reason goes on a public page: mask any credentials an error message carried.
        note = Redactor().redact_text(note)
        print(f"--- {benchmark.script} did not run: {note}", flush=True)
        run = Run(
            benchmark=benchmark.name,
            title=benchmark.title,
            status="not run",
            note=note,
            seconds=seconds,
        )
        return run, []
    records: list[Record] = json.loads(output.read_text(encoding="utf-8"))
    run = Run(
        benchmark=benchmark.name, title=benchmark.title, status="ran", note="", seconds=seconds
    )
    return run, records


def describe_environment(argv: Sequence[str]) -> Environment:
    versions = {}
    for package in PACKAGES:
        try:
            found = distribution(package)
        except PackageNotFoundError:
            continue
        versions[found.metadata["Name"]] = found.version
    wrk = shutil.which("wrk")
    if wrk is not None:
        # `wrk -v` prints its version and exits with status 1.
        banner = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout
        match = re.search(r"wrk (?:\w+/)?(\d[\w.]*)", banner)  # "wrk 4.1.0", "wrk debian/4.1.0-3"
        if match:
            versions["wrk"] = match.group(1)
    if "MAKELEVEL" in os.environ:  # run by `make bench-report`
        command = "make bench-report"
        if argv:
            command += f" BENCH_ARGS={shlex.quote(shlex.join(argv))}"
    else:
        command = shlex.join(["python", "benchmarks/report.py", *argv])
    return Environment(
        date=datetime.now(timezone.utc).date().isoformat(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        machine=describe_machine(),
        versions=versions,
        command=command,
    )


def describe_machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = os.cpu_count() or 1
    return f"{platform.system()} {platform.machine()}, {cpu}, {cores} cores"


# -------------------------------------------------------------------------- rendering


def format_ratio(value: float) -> str:
    return f"{value:.3f}" if abs(value) >= 0.01 else f"{value:.2g}"


def format_value(record: Record) -> str:
    value = record["value"]
    if record["kind"] == "ratio":
        return format_ratio(value)
    if value.is_integer() or abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    elif abs(value) >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {record['unit']}"


def format_target(record: Record) -> str:
    target = record["target"]
    if target is None:
        return "—"
    sign = "≤" if record["better"] == "lower" else "≥"
    unit = "" if record["kind"] == "ratio" else f" {record['unit']}"
    return f"{sign} {target:g}{unit}"


def format_met(record: Record) -> str:
    verdict = met(record)
    if verdict is None:
        return "—"
    return "yes" if verdict else "**no**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_tables(runs: Sequence[Run], records: Sequence[Record]) -> str:
    """The figures as Markdown: ratios and targeted figures first, then the absolute
    figures behind them; a benchmark that did not run has one row saying why."""
    checked = ["| benchmark | measured | target | met? |", "|---|---|---|---|"]
    behind = ["| benchmark | measured |", "|---|---|"]
    for run in runs:
        if run["status"] != "ran":
            checked.append(f"| {_cell(run['title'])} | not run: {_cell(run['note'])} | — | — |")
            continue
        for record in records:
            if record["benchmark"] != run["benchmark"]:
                continue
            label = _cell(f"{run['title']} — {record['name']}")
            if record["kind"] == "ratio" or record["target"] is not None:
                checked.append(
                    f"| {label} | {format_value(record)} | {_cell(format_target(record))}"
                    f" | {format_met(record)} |"
                )
            else:
                behind.append(f"| {label} | {format_value(record)} |")
    text = "\n".join(checked)
    if len(behind) > 2:
        text += "\n\nThe absolute figures behind them, best rounds:\n\n" + "\n".join(behind)
    return text


def render_section(report: Report) -> str:
    """The generated part of docs/performance.md, markers included."""
    environment = report["environment"]
    versions = ", ".join(f"{name} {number}" for name, number in environment["versions"].items())
    ran = [run for run in report["runs"] if run["status"] == "ran"]
    return "\n".join(
        [
            START,
            "<!-- Written by benchmarks/report.py (make bench-report): edit the script,"
            " not this block. -->",
            "",
            f"Measured on {environment['date']} with `{environment['command']}`"
            f" ({len(ran)} of {len(report['runs'])} benchmarks ran):"
            f" {environment['python']} on {environment['machine']}; {versions}."
            f" Every record: [`performance.json`]({RESULTS_LINK}).",
            "",
            f"![Each ratio of backend_kit to the raw library, its target marked, by module]"
            f"({PLOT_LINK})",
            "",
            render_tables(report["runs"], report["records"]),
            END,
        ]
    )


def replace_section(page: str, section: str) -> str:
    """*page* with the text between the markers (markers included) replaced by *section*."""
    start, end = page.find(START), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page needs {START} and, after it, {END} on their own lines")
    return page[:start] + section + page[end + len(END) :]


COLOURS = {True: "#2e7d32", False: "#c62828", None: "#78909c"}


def render_plot(report: Report, path: Path) -> None:
    """Horizontal bars, one per ratio, a black tick at its target, one panel per module."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    groups: list[tuple[str, list[Record]]] = []
    for run in report["runs"]:
        ratios = [
            r
            for r in report["records"]
            if r["benchmark"] == run["benchmark"] and r["kind"] == "ratio"
        ]
        if ratios:
            groups.append((run["title"], ratios))
    missing = [run["title"] for run in report["runs"] if run["status"] != "ran"]

    # Each row as tall as its wrapped label, so long labels never run into each other.
    heights = [sum(len(_label(r).splitlines()) for r in ratios) + 1.5 for _, ratios in groups]
    figure = plt.figure(
        figsize=(11, max(8.0, 2.0 + 0.28 * sum(heights))), dpi=100, layout="constrained"
    )
    environment = report["environment"]
    subtitle = f"{environment['date']}, {environment['python']}, {environment['machine']}"
    if missing:
        subtitle += "\nnot run: " + ", ".join(missing)
    figure.suptitle(
        f"backend_kit against the raw libraries: ratios and their targets\n{subtitle}",
        fontsize=12,
    )
    if not groups:
        figure.text(0.5, 0.5, "no benchmark ran", ha="center", va="center", fontsize=14)
    else:
        axes = figure.subplots(
            len(groups),
            1,
            squeeze=False,
            gridspec_kw={"height_ratios": heights},
        )
        for ax, (title, ratios) in zip(axes[:, 0], groups, strict=True):
            _draw_group(ax, title, ratios)
    handles = [
        Patch(color=COLOURS[True], label="target met"),
        Patch(color=COLOURS[False], label="target missed"),
        Patch(color=COLOURS[None], label="no target (for information)"),
        Line2D([], [], color="black", linewidth=2.5, label="target"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=4, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", metadata={"Software": None})
    plt.close(figure)


def _label(record: Record) -> str:
    return textwrap.fill(record["name"], 42, break_on_hyphens=False)


def _draw_group(ax: Axes, title: str, ratios: Sequence[Record]) -> None:
    positions = list(range(len(ratios)))
    values = [r["value"] for r in ratios]
    ax.barh(positions, values, height=0.6, color=[COLOURS[met(r)] for r in ratios], zorder=2)
    limit = max([*values, *(r["target"] or 0 for r in ratios), 0.001]) * 1.45
    for y, record in zip(positions, ratios, strict=True):
        text = format_ratio(record["value"])
        if record["target"] is not None:
            ax.plot([record["target"]] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2.5)
            text += f"  (target {format_target(record)})"
        # Right of the bar and of the target tick, so neither hides the figure.
        right = max(record["value"], record["target"] or 0.0, 0.0)
        ax.text(right + limit * 0.015, y, text, va="center", fontsize=9, zorder=3)
    labels = [_label(r) for r in ratios]
    ax.set_yticks(positions, labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(min(0.0, *values), limit)
    ax.set_title(title, loc="left", fontsize=11, fontweight="bold")
    ax.grid(axis="x", color="#dddddd", zorder=0)
    ax.tick_params(axis="x", labelsize=8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


# ------------------------------------------------------------------------------- main


def write_outputs(report: Report) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    render_plot(report, PLOT)
    page = PAGE.read_text(encoding="utf-8")
    PAGE.write_text(replace_section(page, render_section(report)), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short rounds: a rough look")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=[b.name for b in BENCHMARKS],
        help="run only these benchmarks (the page then lists only them)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help=f"redraw the page and the plot from {RESULTS.relative_to(ROOT)}",
    )
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(arguments)

    if args.render_only:
        report: Report = json.loads(RESULTS.read_text(encoding="utf-8"))
    else:
        selected = [b for b in BENCHMARKS if args.only is None or b.name in args.only]
        runs: list[Run] = []
        records: list[Record] = []
        with tempfile.TemporaryDirectory(prefix="bench-report-") as workdir:
            for benchmark in selected:
                run, found = run_benchmark(benchmark, quick=args.quick, workdir=Path(workdir))
                runs.append(run)
                records.extend(found)
        report = Report(environment=describe_environment(arguments), runs=runs, records=records)
    write_outputs(report)

    print(f"\n{render_tables(report['runs'], report['records'])}\n")
    for path in (RESULTS, PLOT, PAGE):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
