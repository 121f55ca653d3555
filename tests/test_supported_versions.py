"""The supported Pythons and Djangos are said in five places, which must agree: the
classifiers and the extras in pyproject.toml, the GitHub workflow's matrix, the
combinations `.ci/run` runs, and docs/supported-versions.md."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    not (ROOT / "pyproject.toml").is_file(), reason="needs the source tree"
)


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def _project() -> dict[str, object]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project: dict[str, object] = data["project"]
    return project


def _classified(prefix: str) -> list[str]:
    classifiers = _project()["classifiers"]
    assert isinstance(classifiers, list)
    found = [c.removeprefix(prefix) for c in classifiers if c.startswith(prefix)]
    return sorted((v for v in found if re.fullmatch(r"\d+\.\d+", v)), key=_key)


PYTHONS = _classified("Programming Language :: Python :: ")
DJANGOS = _classified("Framework :: Django :: ")


def _workflow_pairs() -> set[tuple[str, str]]:
    workflow = yaml.safe_load((ROOT / ".github/workflows/ci.yml").read_text(encoding="utf-8"))
    matrix = workflow["jobs"]["tests"]["strategy"]["matrix"]
    pairs = {(p, d) for p in matrix["python"] for d in matrix["django"]}
    return pairs - {(e["python"], e["django"]) for e in matrix.get("exclude", [])}


def _documented_pairs() -> set[tuple[str, str]]:
    """The "yes" cells of the page's Python x Django table."""
    page = (ROOT / "docs/supported-versions.md").read_text(encoding="utf-8")
    header = re.search(r"^\| Python \|(?P<cells>.*Django.*)\|$", page, re.MULTILINE)
    assert header is not None
    columns = [re.search(r"\d+\.\d+", cell) for cell in header["cells"].split("|")]
    djangos = [column.group() if column else "" for column in columns]
    pairs = set()
    for row in re.finditer(r"^\| (?P<python>3\.\d+) \|(?P<cells>.*)\|$", page, re.MULTILINE):
        for django, cell in zip(djangos, row["cells"].split("|"), strict=True):
            if cell.strip() == "yes":
                pairs.add((row["python"], django))
    return pairs


def _ci_run_combinations() -> list[tuple[str, str, str]]:
    script = (ROOT / ".ci/run").read_text(encoding="utf-8")
    return re.findall(r'^combination (\d+\.\d+) (\d+\.\d+) "([^"]+)"', script, re.MULTILINE)


def _django_needs(django: str) -> str:
    """The oldest Python a Django release runs on (Django's own release notes)."""
    return "3.12" if _key(django) >= (6, 0) else "3.10"


def test_classifiers_and_requires_python_agree() -> None:
    assert PYTHONS == ["3.10", "3.11", "3.12", "3.13"]
    assert DJANGOS == ["5.2", "6.0", "6.1"]
    assert _project()["requires-python"] == f">={PYTHONS[0]}"


def test_the_django_extra_starts_at_the_oldest_supported_django() -> None:
    extras = _project()["optional-dependencies"]
    assert isinstance(extras, dict)
    assert extras["django"] == [f"django>={DJANGOS[0]}"]


def test_the_workflow_runs_every_supported_combination_and_no_other() -> None:
    expected = {
        (python, django)
        for python in PYTHONS
        for django in DJANGOS
        if _key(python) >= _key(_django_needs(django))
    }
    assert _workflow_pairs() == expected
    assert _documented_pairs() == expected


def test_ci_run_covers_every_django_and_the_oldest_and_newest_python() -> None:
    combinations = _ci_run_combinations()
    pairs = {(python, django) for python, django, _ in combinations}
    assert pairs <= _workflow_pairs()
    assert {django for _, django in pairs} == set(DJANGOS)
    whole_suite = {
        (python, django) for python, django, scope in combinations if scope == "make test"
    }
    assert (PYTHONS[0], DJANGOS[0]) in whole_suite  # the oldest with the oldest
    assert (PYTHONS[-1], DJANGOS[-1]) in whole_suite  # the newest with the newest
