"""What a user installs: the version, the typing marker, and (in CI) the wheel itself."""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

import pytest

import backend_kit


def test_version_comes_from_the_installed_metadata() -> None:
    assert backend_kit.__version__ == version("backend-kit")


def test_the_package_is_typed() -> None:
    assert (Path(backend_kit.__file__).parent / "py.typed").is_file()


@pytest.mark.skipif(
    os.environ.get("BACKEND_KIT_EXPECT_INSTALLED") != "1",
    reason="only when the suite runs against the built wheel (.ci/run)",
)
def test_suite_runs_against_the_installed_wheel() -> None:
    """An import from the source tree would hide a packaging mistake."""
    location = Path(backend_kit.__file__).resolve()
    assert "site-packages" in location.parts, location
    assert not (location.parent.parent.parent / "pyproject.toml").exists()
