"""`backend-kit config …`: through click's runner, and as the real console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from backend_kit.cli import main

CANARY = "canary-7c1e5d0b94"


@pytest.fixture(autouse=True)
def _forget_imported_settings_modules() -> Iterator[None]:
    """The CLI imports user modules from the current directory; each test has its own."""
    saved_path = list(sys.path)
    yield
    sys.path[:] = saved_path
    for name in ("myservice", "broken", "svc"):
        sys.modules.pop(name, None)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_check_passes_with_one_summary_line() -> None:
    code, out, err = run("config", "check")
    assert code == 0
    assert out.count("\n") == 1
    assert out.startswith("OK: backend_kit.Settings is valid")
    assert err == ""


def test_check_lists_every_problem_and_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("DEBUG", "perhaps")
    code, out, err = run("config", "check")
    assert code == 2
    assert out == ""
    assert "2 problems" in err
    assert "LOG_LEVEL:" in err
    assert "DEBUG:" in err


def test_show_table_has_values_and_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgres://app:{CANARY}@db:5432/app")
    Path(".env").write_text("SERVICE_NAME=billing\n")
    code, out, _ = run("config", "show")
    assert code == 0
    assert "postgres://app:***@db:5432/app" in out
    assert "environment variable DATABASE_URL" in out
    assert "SERVICE_NAME in .env" in out
    assert CANARY not in out


def test_show_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTH_TOKEN", CANARY)
    code, out, _ = run("config", "show", "--format", "json")
    assert code == 0
    data = json.loads(out)
    rows = {row["variable"]: row for row in data["variables"]}
    assert data["settings"] == "backend_kit.Settings"
    assert rows["HEALTH_TOKEN"] == {
        "variable": "HEALTH_TOKEN",
        "value": "**********",
        "source": "environment variable HEALTH_TOKEN",
        "secret": True,
    }
    assert rows["LOG_LEVEL"]["source"] == "default"
    assert CANARY not in out


def test_env_lists_every_variable() -> None:
    code, out, _ = run("config", "env", "--format", "json")
    assert code == 0
    rows = {row["variable"]: row for row in json.loads(out)["variables"]}
    for name in (
        "SERVICE_NAME",
        "ENVIRONMENT",
        "DEBUG",
        "RELEASE",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "SENTRY_DSN",
        "SENTRY_TRACES_SAMPLE_RATE",
        "DATABASE_URL",
        "CACHE_URL",
        "HEALTH_TOKEN",
    ):
        assert name in rows
    assert rows["DATABASE_URL"]["secret"] is True
    assert rows["LOG_LEVEL"]["secret"] is False
    assert rows["CACHE_URL"]["default"] == "memory://"
    assert rows["ENVIRONMENT"]["type"] == "one of: development, test, staging, production"


def test_env_table_and_markdown() -> None:
    code, out, _ = run("config", "env")
    assert code == 0
    assert "SENTRY_TRACES_SAMPLE_RATE" in out
    code, out, _ = run("config", "env", "--format", "markdown")
    assert code == 0
    assert out.splitlines()[0].startswith("| Variable | Type | Default |")
    assert "| `DATABASE_URL` | URL |" in out


def write_settings_module(directory: Path) -> None:
    (directory / "myservice.py").write_text(
        "from pydantic import BaseModel, SecretStr\n"
        "from pydantic_settings import SettingsConfigDict\n"
        "from backend_kit import Settings\n\n"
        "class Db(BaseModel):\n"
        "    port: int = 5432\n\n"
        "class ServiceSettings(Settings):\n"
        "    model_config = SettingsConfigDict(env_prefix='MYSVC_')\n"
        "    api_token: SecretStr\n"
        "    db: Db = Db()\n"
        "NOT_A_CLASS = 3\n"
    )


def test_settings_class_from_option_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    write_settings_module(Path.cwd())
    code, out, _ = run(
        "config", "--settings", "myservice:ServiceSettings", "env", "--format", "json"
    )
    assert code == 0
    names = [row["variable"] for row in json.loads(out)["variables"]]
    assert "MYSVC_API_TOKEN" in names
    assert "MYSVC_DB__PORT" in names
    monkeypatch.setenv("BACKEND_KIT_SETTINGS", "myservice:ServiceSettings")
    code, _, err = run("config", "check")
    assert code == 2
    assert "MYSVC_API_TOKEN: required, but not set" in err


def test_settings_option_after_the_subcommand_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    write_settings_module(Path.cwd())
    # A variable naming a module that does not exist: never imported, since the
    # subcommand's option replaces it.
    monkeypatch.setenv("BACKEND_KIT_SETTINGS", "missing_module:Nothing")
    code, out, err = run("config", "env", "--settings", "myservice:ServiceSettings")
    assert code == 0, err
    assert "MYSVC_API_TOKEN" in out
    code, _, err = run("health", "live", "--settings", "myservice:ServiceSettings")
    assert code == 2
    assert "MYSVC_API_TOKEN: required, but not set" in err


def _console_script() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "backend-kit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "backend_kit.cli"]


SETTINGS = ("--settings", "svc:Svc")


@pytest.mark.parametrize(
    "args",
    [
        (*SETTINGS, "config", "check"),
        ("config", *SETTINGS, "check"),
        ("config", "check", *SETTINGS),
        (*SETTINGS, "config", "show"),
        (*SETTINGS, "config", "env"),
        (*SETTINGS, "config", "example"),
        (*SETTINGS, "health", "ready", "--json"),
        ("health", *SETTINGS, "ready", "--json"),
        ("health", "ready", "--json", *SETTINGS),
    ],
    ids=lambda args: " ".join(args),
)
def test_the_settings_option_goes_anywhere_in_the_console_script(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    """Before the group, after it, or after the subcommand: the same class, and a
    variable naming a module that does not exist is never imported."""
    (tmp_path / "svc.py").write_text(
        "from pydantic_settings import SettingsConfigDict\n"
        "from backend_kit import Settings\n"
        "class Svc(Settings):\n"
        "    model_config = SettingsConfigDict(env_prefix='PLACED_')\n"
        "    service_name: str = 'placed-service'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_KIT_", "PLACED_"))}
    env["BACKEND_KIT_SETTINGS"] = "missing_module:Nothing"
    result = subprocess.run(
        [*_console_script(), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    # check names the class, show/env/example its variables, health its service.
    assert any(sign in result.stdout for sign in ("svc.Svc is valid", "PLACED_", "placed-service"))


def test_the_innermost_typed_settings_option_wins(tmp_path: Path) -> None:
    (tmp_path / "svc.py").write_text(
        "from backend_kit import Settings\nclass Svc(Settings):\n    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_KIT_")}
    command = [*_console_script(), "--settings", "svc:Svc", "config", "--settings"]
    result = subprocess.run(
        [*command, "missing_module:Nothing", "check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: no module named 'missing_module'")
    assert "Traceback" not in result.stderr


def test_example_is_a_commented_env_file() -> None:
    write_settings_module(Path.cwd())
    code, out, _ = run("config", "--settings", "myservice:ServiceSettings", "example")
    assert code == 0
    lines = out.splitlines()
    assert "MYSVC_API_TOKEN=" in lines  # required: uncommented, to be filled in
    assert "# MYSVC_LOG_LEVEL=INFO" in lines
    assert "# MYSVC_DB__PORT=5432" in lines
    # The example is itself a valid dotenv file once the required value is filled in.
    Path(".env").write_text(out.replace("MYSVC_API_TOKEN=", "MYSVC_API_TOKEN=filled-in"))
    code, _, err = run("config", "--settings", "myservice:ServiceSettings", "check")
    assert code == 0, err


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module:Settings", "no module named 'no_such_module'"),
        ("myservice:Missing", "module 'myservice' has no attribute 'Missing'"),
        ("myservice:NOT_A_CLASS", "is not a subclass of backend_kit.Settings"),
        ("json:JSONDecoder", "is not a subclass of backend_kit.Settings"),
        ("not a path", "is not of the form package.module:ClassName"),
        ("broken:Settings", "importing 'broken' failed: ZeroDivisionError"),
    ],
)
def test_wrong_settings_class_is_one_line_and_exit_2(path: str, message: str) -> None:
    write_settings_module(Path.cwd())
    Path("broken.py").write_text("1 / 0\n")
    code, out, err = run("config", "--settings", path, "check")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert message in err
    assert "Traceback" not in err


def test_the_console_script_end_to_end(tmp_path: Path) -> None:
    """Three invalid variables from three sources and one secret canary in each secret
    source: exit 2, every variable named as the user must spell it, the canary nowhere."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "myapp_health_token").write_text(CANARY + "-secretsdir\n")
    (secrets / "MYAPP_SENTRY_SAMPLE_RATE").write_text("2.5\n")
    (tmp_path / ".env").write_text(
        f"MYAPP_DB__PORT=eighty\nMYAPP_DATABASE_URL=postgres://app:{CANARY}-dotenv@db/app\n"
    )
    (tmp_path / "svc.py").write_text(
        "from pydantic import BaseModel\n"
        "from pydantic_settings import SettingsConfigDict\n"
        "from backend_kit import Settings\n"
        "class Db(BaseModel):\n    port: int = 5432\n"
        "class Svc(Settings):\n"
        "    model_config = SettingsConfigDict(env_prefix='MYAPP_')\n"
        "    db: Db = Db()\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BACKEND_KIT_", "MYAPP_"))
    }
    env.update(
        BACKEND_KIT_SETTINGS="svc:Svc",
        BACKEND_KIT_SECRETS_DIR=str(secrets),
        MYAPP_LOG_LEVEL="chatty",
        MYAPP_SENTRY_DSN=f"https://{CANARY}-env@o1.ingest.example.com/1",
    )
    command = _console_script()
    outputs = []
    for args in (["config", "check"], ["config", "show"], ["config", "show", "--format", "json"]):
        result = subprocess.run(
            [*command, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, result.stderr
        outputs += [result.stdout, result.stderr]
    report = outputs[1]
    for variable in ("MYAPP_LOG_LEVEL", "MYAPP_DB__PORT", "MYAPP_SENTRY_SAMPLE_RATE"):
        assert f"  - {variable}:" in report
    assert "3 problems" in report
    assert "environment variable MYAPP_LOG_LEVEL" in report
    assert "MYAPP_DB__PORT in .env" in report
    assert "in the secrets directory" in report
    for output in outputs:
        assert CANARY not in output


OPTIONAL_PACKAGES = {
    "django",
    "flask",
    "redis",
    "psycopg",
    "sentry_sdk",
    "httpx",
    "requests",
    "urllib3",
    "aiohttp",
    "celery",
    "kombu",
    "prometheus_client",
    "opentelemetry",
    "tenacity",
}


def _imported_by(code: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    return {name for name in imported if name and not name.startswith("import time")}


def test_import_stays_light() -> None:
    # Every public name, the testing helpers and health: still no framework, client
    # or optional integration until it is used.
    imported = _imported_by(
        "from backend_kit import *\nimport backend_kit.testing\nimport backend_kit.health"
    )
    top_level = {name.split(".")[0] for name in imported}
    assert {"backend_kit", "pydantic_settings", "structlog"} <= top_level
    assert not top_level & OPTIONAL_PACKAGES


def test_the_package_and_its_pytest_plugin_import_nothing_until_used() -> None:
    # pytest loads the plugin before coverage starts: it must not import the package's
    # modules, or coverage could not measure them.
    imported = _imported_by("import backend_kit.pytest_plugin")
    assert {name for name in imported if name.startswith("backend_kit")} == {
        "backend_kit",
        "backend_kit.pytest_plugin",
    }
    assert "pydantic_settings" not in imported
