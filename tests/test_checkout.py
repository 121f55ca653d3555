"""What a new user does first in a checkout: `pytest`, and `make demo` on a port of
their choice."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(
    not (ROOT / "pyproject.toml").is_file(), reason="needs the source tree"
)


def test_the_pytest_command_runs_in_a_checkout() -> None:
    """The `pytest` console script, not `python -m pytest`: the checkout's root is not on
    sys.path unless the configuration puts it there."""
    script = Path(sysconfig.get_path("scripts")) / "pytest"
    if not script.exists():
        pytest.skip(f"no pytest console script next to {sys.executable}")
    result = subprocess.run(
        [str(script), "-q", "-p", "no:cacheprovider", "tests/test_context.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_takes_its_port_and_says_what_it_installs(tmp_path: Path) -> None:
    # -n prints what make would run, without running it; a venv that does not exist yet
    # shows the first run's installation too.
    result = subprocess.run(
        ["make", "-n", "demo", "DEMO_PORT=8123", f"DEMO_VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--bind 127.0.0.1:8123 " in result.stdout
    assert "127.0.0.1:8000" not in result.stdout
    assert "from the package index" in result.stdout
    assert "they log at debug" in result.stdout
