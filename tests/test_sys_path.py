"""The library never changes ``sys.path``; only the ``backend-kit`` command makes the
current directory importable, for its own process."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DJANGO_STARTUP = """
import sys
before = list(sys.path)
import django
django.setup()  # backend_kit.django's AppConfig imports BACKEND_KIT_SETTINGS
from backend_kit._class_import import import_settings_class
import_settings_class("tests.django_project.service:ServiceSettings")
assert sys.path == before, sorted(set(sys.path) - set(before))
print("unchanged")
"""


def test_django_startup_and_the_settings_import_leave_sys_path_alone(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_KIT_")}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.django_project.settings",
        PYTHONPATH=str(PROJECT_ROOT),
        ENVIRONMENT="test",
    )
    result = subprocess.run(
        [sys.executable, "-c", DJANGO_STARTUP],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "unchanged"


def test_a_module_in_the_current_directory_is_not_found_by_the_library(tmp_path: Path) -> None:
    (tmp_path / "localsettings.py").write_text(
        "from backend_kit import Settings\nclass Local(Settings):\n    pass\n"
    )
    script = (
        "import sys\n"
        "sys.path = [p for p in sys.path if p not in ('', '.')]\n"
        "from backend_kit import ConfigError\n"
        "from backend_kit._class_import import import_settings_class\n"
        "try:\n"
        "    import_settings_class('localsettings:Local')\n"
        "except ConfigError as error:\n"
        "    print('not found:', error.problems[0].message)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert "not found: no module named 'localsettings'" in result.stdout, result.stderr
    # The command finds it: it puts the current directory on its own sys.path. (The
    # console script, not ``python -m``, which would put it there by itself.)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_KIT_")}
    script_path = Path(sysconfig.get_path("scripts")) / "backend-kit"
    result = subprocess.run(
        [
            str(script_path),
            "config",
            "check",
            "--settings",
            "localsettings:Local",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: localsettings.Local is valid")
