"""The configuration reference page agrees with the settings model."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from click.testing import CliRunner

from backend_kit.cli import main

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGE = DOCS / "reference" / "configuration.md"
HOW_TO_FIX = (
    "docs/reference/configuration.md disagrees with backend_kit.Settings; regenerate it "
    "with `make docs-reference` (or `python docs/gen_config_reference.py`) and commit it"
)


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", DOCS / "gen_config_reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_page_matches_the_model() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert _generator().render(page) == page, HOW_TO_FIX


def test_the_page_holds_what_the_command_prints() -> None:
    result = CliRunner().invoke(
        main, ["config", "--settings", "backend_kit.Settings", "env", "--format", "markdown"]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout in PAGE.read_text(encoding="utf-8"), HOW_TO_FIX
