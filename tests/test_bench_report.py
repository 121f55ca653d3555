"""The benchmark report's rendering (benchmarks/report.py), on fixed records: the page's
table, the block it rewrites between its markers, and the plot. No benchmark runs here."""

from __future__ import annotations

import importlib
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("report")
    finally:
        sys.path.remove(str(BENCHMARKS))


def record(name: str, value: float, **fields: Any) -> dict[str, Any]:
    defaults = {"unit": "x", "target": None, "kind": "ratio", "better": "lower"}
    return {"benchmark": fields.pop("benchmark", "bench_a"), "name": name, "value": value} | (
        defaults | fields
    )


RUNS = [
    {"benchmark": "bench_a", "title": "Logging", "status": "ran", "note": "", "seconds": 1.0},
    {"benchmark": "bench_b", "title": "Flask", "status": "ran", "note": "", "seconds": 2.0},
    {
        "benchmark": "bench_c",
        "title": "gunicorn + wrk",
        "status": "not run",
        "note": "wrk is needed: apt-get install wrk",
        "seconds": 0.1,
    },
]
RECORDS = [
    record("debug / info", 0.0123, target=0.05),
    record("info / structlog", 1.4, target=1.3),
    record("info / stdlib (orjson)", 0.00042),
    record("stampede wall time", 52.44, unit="ms", kind="absolute", target=100),
    record("info", 5.137, unit="µs/call", kind="absolute"),
    record("backend_kit / bare", 0.9, benchmark="bench_b", target=0.9, better="higher"),
    record("bare", 7840.4, benchmark="bench_b", unit="req/s", kind="absolute", better="higher"),
]
ENVIRONMENT = {
    "date": "2026-01-02",
    "python": "CPython 3.11.7",
    "machine": "Linux x86_64, Some CPU, 2 cores",
    "versions": {"backend-kit": "0.1.0", "Flask": "3.1.3"},
    "command": "make bench-report",
}


def test_the_table_checks_each_figure_against_its_target(report: ModuleType) -> None:
    assert report.render_tables(RUNS, RECORDS).splitlines() == [
        "| benchmark | measured | target | met? |",
        "|---|---|---|---|",
        "| Logging — debug / info | 0.012 | ≤ 0.05 | yes |",
        "| Logging — info / structlog | 1.400 | ≤ 1.3 | **no** |",
        "| Logging — info / stdlib (orjson) | 0.00042 | — | — |",
        "| Logging — stampede wall time | 52.4 ms | ≤ 100 ms | yes |",
        "| Flask — backend_kit / bare | 0.900 | ≥ 0.9 | yes |",
        "| gunicorn + wrk | not run: wrk is needed: apt-get install wrk | — | — |",
        "",
        "The absolute figures behind them, best rounds:",
        "",
        "| benchmark | measured |",
        "|---|---|",
        "| Logging — info | 5.14 µs/call |",
        "| Flask — bare | 7,840 req/s |",
    ]


def test_a_pipe_in_a_name_does_not_break_the_table(report: ModuleType) -> None:
    table = report.render_tables(RUNS[:1], [record("a | b", 1.0)])
    assert "| Logging — a \\| b | 1.000 | — | — |" in table.splitlines()


def test_only_the_block_between_the_markers_is_rewritten(report: ModuleType) -> None:
    page = (
        "# Performance\n\nProse above.\n\n"
        f"{report.START}\nold figures\n{report.END}\n\nProse below.\n"
    )
    section = report.render_section({"environment": ENVIRONMENT, "runs": RUNS, "records": RECORDS})
    rewritten = report.replace_section(page, section)

    assert rewritten.startswith("# Performance\n\nProse above.\n\n" + report.START)
    assert rewritten.endswith(report.END + "\n\nProse below.\n")
    assert "old figures" not in rewritten
    assert "Measured on 2026-01-02 with `make bench-report` (2 of 3 benchmarks ran)" in section
    assert "CPython 3.11.7 on Linux x86_64, Some CPU, 2 cores" in section
    assert "backend-kit 0.1.0, Flask 3.1.3" in section
    assert "](assets/performance.png)" in section
    assert report.render_tables(RUNS, RECORDS) in section
    # Rewriting again gives the same page: the markers survive.
    assert report.replace_section(rewritten, section) == rewritten


def test_a_page_without_the_markers_is_refused(report: ModuleType) -> None:
    with pytest.raises(ValueError, match="bench-report:start"):
        report.replace_section("# Performance\n", "figures")


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def test_the_plot_is_a_png_of_fixed_width_growing_with_its_rows(
    report: ModuleType, tmp_path: Path
) -> None:
    few, many = tmp_path / "few.png", tmp_path / "many.png"
    report.render_plot({"environment": ENVIRONMENT, "runs": RUNS, "records": RECORDS}, few)
    more_rows = [
        record("backend_kit / bare", 0.9 + i / 100, benchmark="bench_b", target=0.9)
        for i in range(30)
    ]
    report.render_plot(
        {"environment": ENVIRONMENT, "runs": RUNS, "records": RECORDS + more_rows}, many
    )

    (few_width, few_height), (many_width, many_height) = _png_size(few), _png_size(many)
    assert few_width == many_width == 1100
    assert few_height >= 800  # never squashed below a readable page
    assert many_height > few_height


def test_the_plot_says_when_nothing_ran(report: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "performance.png"
    report.render_plot({"environment": ENVIRONMENT, "runs": RUNS[2:], "records": []}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
