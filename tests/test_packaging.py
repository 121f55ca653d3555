"""What a user installs: the version, the typing marker, the wheel and the sdist.

The distribution checks read the files CI built and will release (``BACKEND_KIT_DIST``
names their folder: ``.ci/run`` and the workflows set it); without it they build both
from this source tree when ``build`` and ``hatchling`` are installed, and skip otherwise.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import HeaderParser
from importlib.metadata import version
from pathlib import Path, PurePosixPath

import pytest

import backend_kit

ROOT = Path(__file__).resolve().parent.parent
DIST_VARIABLE = "BACKEND_KIT_DIST"

# Folders of the source tree that the sdist carries whole (pyproject.toml, sdist include).
SDIST_FOLDERS = ("src", "tests", "docs", "examples", "benchmarks", "fuzz")
# What must never be in a distribution: local environments, build output, caches,
# databases and env files that may hold secrets.
FORBIDDEN_PARTS = frozenset(
    {".venv", ".venv-ci", ".venv-build", ".git", "dist", "build", "site", ".demo"}
    | {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
)


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


# The built distribution.


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding one sdist and one wheel."""
    given = os.environ.get(DIST_VARIABLE)
    if given:
        return Path(given).resolve()
    pytest.importorskip("build", reason=f"set {DIST_VARIABLE} or install build to check it")
    pytest.importorskip("hatchling", reason=f"set {DIST_VARIABLE} or install hatchling")
    pytest.importorskip(
        "hatch_fancy_pypi_readme", reason=f"set {DIST_VARIABLE} or install hatch-fancy-pypi-readme"
    )
    out = tmp_path_factory.mktemp("dist")
    # No isolation: the installed hatchling builds, so nothing is downloaded.
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


@pytest.fixture(scope="module")
def sdist_files(dist: Path) -> set[str]:
    """The sdist's files, relative to its top folder (``backend_kit-X.Y.Z/``)."""
    with tarfile.open(_one(dist, "backend_kit-*.tar.gz")) as archive:
        names = [member.name for member in archive.getmembers() if member.isfile()]
    tops = {PurePosixPath(name).parts[0] for name in names}
    assert len(tops) == 1, tops
    return {str(PurePosixPath(*PurePosixPath(name).parts[1:])) for name in names}


@pytest.fixture(scope="module")
def wheel_files(dist: Path) -> set[str]:
    with zipfile.ZipFile(_one(dist, "backend_kit-*-py3-none-any.whl")) as archive:
        return {name for name in archive.namelist() if not name.endswith("/")}


def _metadata_version(text: str) -> str:
    return str(HeaderParser().parsestr(text)["Version"])


def _forbidden(names: set[str]) -> list[str]:
    return sorted(
        name
        for name in names
        if FORBIDDEN_PARTS & set(PurePosixPath(name).parts)
        or name.endswith((".pyc", ".pyo", ".sqlite3"))
        or PurePosixPath(name).name.startswith(".env")
    )


def test_the_sdist_holds_what_rebuilds_tests_and_documents_the_package(
    sdist_files: set[str],
) -> None:
    for name in ("pyproject.toml", "PKG-INFO", "README.md", "CHANGELOG.md", "LICENSE"):
        assert name in sdist_files
    for name in (
        "src/backend_kit/__init__.py",
        "src/backend_kit/py.typed",
        "tests/conftest.py",
        "tests/typing/api.py",
        "docs/settings.md",
        "examples/flask_app/app.py",
        "examples/django_project/manage.py",
    ):
        assert name in sdist_files
    assert _forbidden(sdist_files) == []


def test_the_sdist_misses_no_tracked_file(sdist_files: set[str]) -> None:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout the sdist was built from")
    listed = subprocess.run(
        [git, "ls-files", "--", *SDIST_FOLDERS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert listed, "git lists no files"
    assert sorted(set(listed) - sdist_files) == []


def test_the_wheel_holds_the_typed_package_and_its_metadata_only(
    wheel_files: set[str], sdist_files: set[str]
) -> None:
    tops = {PurePosixPath(name).parts[0] for name in wheel_files}
    (dist_info,) = (top for top in tops if top.endswith(".dist-info"))
    assert tops == {"backend_kit", dist_info}
    assert "backend_kit/py.typed" in wheel_files
    assert f"{dist_info}/licenses/LICENSE" in wheel_files
    assert _forbidden(wheel_files) == []
    # Exactly the package's sources, as the sdist carries them.
    package = {name for name in wheel_files if name.startswith("backend_kit/")}
    assert package == {
        name.removeprefix("src/") for name in sdist_files if name.startswith("src/backend_kit/")
    }


def test_the_wheel_declares_the_command_and_the_pytest_plugin(dist: Path) -> None:
    with zipfile.ZipFile(_one(dist, "backend_kit-*.whl")) as archive:
        (entry_points,) = (n for n in archive.namelist() if n.endswith("/entry_points.txt"))
        text = archive.read(entry_points).decode()
    assert "backend-kit = backend_kit.cli:main" in text
    assert "backend_kit = backend_kit.pytest_plugin" in text


def test_both_files_carry_the_installed_version(dist: Path) -> None:
    """One source for the version: pyproject.toml, read back from the metadata."""
    installed = version("backend-kit")
    with zipfile.ZipFile(_one(dist, "backend_kit-*.whl")) as archive:
        (metadata,) = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        assert _metadata_version(archive.read(metadata).decode()) == installed
    sdist = _one(dist, "backend_kit-*.tar.gz")
    assert sdist.name == f"backend_kit-{installed}.tar.gz"
    with tarfile.open(sdist) as archive:
        pkg_info = archive.extractfile(f"backend_kit-{installed}/PKG-INFO")
        assert pkg_info is not None
        assert _metadata_version(pkg_info.read().decode()) == installed


def test_the_description_on_pypi_has_no_link_that_leads_nowhere(dist: Path) -> None:
    """README.md's links are relative to the repository; PyPI shows it without one."""
    with zipfile.ZipFile(_one(dist, "backend_kit-*.whl")) as archive:
        (metadata,) = (n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        message = HeaderParser().parsestr(archive.read(metadata).decode())
    assert message["Description-Content-Type"] == "text/markdown"
    description = message.get_payload()
    assert "## Development" in description  # the whole README, not a fragment
    targets = re.findall(r"\]\(([^)]+)\)", description)
    assert targets
    assert [target for target in targets if not target.startswith("https://")] == []
    # Each documentation link names a page the site builds from docs/.
    site = "https://backend-kit.github.io/backend-kit/"
    for target in targets:
        if target.startswith(site):
            page = target.removeprefix(site).partition("#")[0].rstrip("/") or "index"
            assert (ROOT / "docs" / f"{page}.md").is_file(), target
