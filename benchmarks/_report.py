"""The figures of one benchmark run as machine-readable records.

Every script in ``benchmarks/`` takes ``--json PATH`` and, besides its human-readable
output, writes there a JSON list of records, one per figure::

    {"benchmark": "bench_flask", "name": "backend_kit / bare", "value": 0.764,
     "unit": "x", "target": 0.9, "kind": "ratio", "better": "higher"}

``kind`` is ``"ratio"`` (backend_kit against the raw library, unit ``"x"``) or
``"absolute"`` (a time, a rate, a count); ``target`` is ``null`` for figures given for
information only; ``better`` says which way the target is met. ``benchmarks/report.py``
collects them for the performance page.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Literal, TypedDict

Kind = Literal["ratio", "absolute"]
Better = Literal["lower", "higher"]


class Record(TypedDict):
    benchmark: str
    name: str
    value: float
    unit: str
    target: float | None
    kind: Kind
    better: Better


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        metavar="PATH",
        help="also write the figures to PATH as a JSON list of records",
    )


def met(record: Record) -> bool | None:
    """Whether *record* meets its target; None when it has none."""
    target = record["target"]
    if target is None:
        return None
    if record["better"] == "lower":
        return record["value"] <= target
    return record["value"] >= target


class Results:
    """The records of one benchmark script, in the order they were measured."""

    def __init__(self, benchmark: str) -> None:
        self.benchmark = benchmark
        self.records: list[Record] = []

    def ratio(
        self, name: str, value: float, *, target: float | None = None, better: Better
    ) -> float:
        """Record backend_kit's figure divided by the raw library's; returns *value*."""
        return self._add(name, value, "x", target, "ratio", better)

    def absolute(
        self,
        name: str,
        value: float,
        unit: str,
        *,
        target: float | None = None,
        better: Better,
    ) -> float:
        """Record a measured time, rate or count; returns *value*."""
        return self._add(name, value, unit, target, "absolute", better)

    def _add(
        self, name: str, value: float, unit: str, target: float | None, kind: Kind, better: Better
    ) -> float:
        self.records.append(
            Record(
                benchmark=self.benchmark,
                name=name,
                value=float(value),
                unit=unit,
                target=target,
                kind=kind,
                better=better,
            )
        )
        return value

    def write(self, path: str | None) -> None:
        """Write the records to *path* as JSON (nothing when *path* is None)."""
        if path is None:
            return
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(self.records, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
