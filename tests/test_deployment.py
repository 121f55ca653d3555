"""The examples' Dockerfiles: read as Docker reads them, then their health check and
their command run for real.

Docker itself is not needed: each example is served under gunicorn with the options of
its ``CMD`` and the environment of its ``ENV`` lines (on a free loopback port instead of
0.0.0.0:8000), and the exact ``HEALTHCHECK`` command is run against it, with the
``backend-kit`` script of the environment running the tests.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .servers import GunicornServer, RedisServer, free_port, gunicorn_server, redis_server
from .test_examples import EXAMPLES, _clean_env, prepare

IMAGE_PORT = "8000"
IMAGE_URL = f"http://127.0.0.1:{IMAGE_PORT}"


# Reading a Dockerfile.


@dataclass(frozen=True)
class Dockerfile:
    """The instructions of a Dockerfile's final stage (the image that is run)."""

    path: Path
    instructions: list[tuple[str, str]]  # (INSTRUCTION, its arguments), in order

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        instructions: list[tuple[str, str]] = []
        pending = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue  # comments and blank lines, also inside a continued instruction
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            keyword, _, arguments = (pending + stripped).partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
        assert not pending, f"{path}: the last instruction is continued past the end"
        last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
        return cls(path, instructions[last_from:])

    def all(self, keyword: str) -> list[str]:
        return [arguments for name, arguments in self.instructions if name == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"{self.path}: no {keyword}"
        return found[-1]

    @property
    def base_image(self) -> str:
        words = [word for word in self.last("FROM").split() if not word.startswith("--")]
        return words[0]

    @property
    def env(self) -> dict[str, str]:
        """Every ``ENV`` of the final stage, PATH left out (it names the image's folders)."""
        values: dict[str, str] = {}
        for arguments in self.all("ENV"):
            for pair in shlex.split(arguments):
                name, sep, value = pair.partition("=")
                assert sep, f"{self.path}: ENV {pair!r} is not NAME=value"
                values[name] = value
        values.pop("PATH", None)
        return values

    @property
    def healthcheck(self) -> tuple[dict[str, str], list[str]]:
        """The options (``--timeout`` ...) and the exec-form command of ``HEALTHCHECK``."""
        options_text, sep, command = self.last("HEALTHCHECK").partition("CMD ")
        assert sep, f"{self.path}: HEALTHCHECK has no CMD"
        options = dict(option.removeprefix("--").split("=") for option in options_text.split())
        argv = json.loads(command)  # the exec form: no shell inside the container
        assert isinstance(argv, list)
        return options, [str(arg) for arg in argv]

    @property
    def cmd(self) -> list[str]:
        argv = json.loads(self.last("CMD"))
        assert isinstance(argv, list)
        return [str(arg) for arg in argv]


@dataclass(frozen=True)
class Image:
    folder: str
    prefix: str
    settings: dict[str, str]  # set at `docker run`, without the prefix
    prepare: tuple[str, ...] = ()  # run in the image before the service (migrations)

    @property
    def dockerfile(self) -> Dockerfile:
        return Dockerfile.read(EXAMPLES / self.folder / "Dockerfile")


FLASK = Image("flask_app", "CATALOG_", {})
DJANGO = Image(
    "django_project",
    "SHOP_",
    # Production hosts: the health check must pass on 127.0.0.1 all the same.
    {"SECRET_KEY": "deployment-tests-only-0123456789", "ALLOWED_HOSTS": '["shop.example.com"]'},
    prepare=("manage.py", "migrate", "--noinput"),
)
IMAGES = pytest.mark.parametrize("image", [FLASK, DJANGO], ids=["flask", "django"])

# Variables of an image that are not the service's settings.
NOT_SETTINGS = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_DISABLE_PIP_VERSION_CHECK"}
NOT_SETTINGS |= {"BACKEND_KIT_SETTINGS", "WEB_CONCURRENCY", "DJANGO_SETTINGS_MODULE"}


# What the Dockerfiles say.


@IMAGES
def test_the_image_is_slim_runs_as_a_user_and_checks_its_health(image: Image) -> None:
    dockerfile = image.dockerfile
    assert dockerfile.base_image == "python:3.12-slim"
    user = dockerfile.last("USER").split(":")[0]
    assert user not in ("", "root", "0")
    assert dockerfile.all("EXPOSE") == [IMAGE_PORT]

    options, argv = dockerfile.healthcheck
    assert argv[:5] == ["backend-kit", "health", "ready", "--url", IMAGE_URL]
    # Docker's own limit leaves the command time to report its timeout itself.
    probe_timeout = float(argv[argv.index("--timeout") + 1])
    assert float(options["timeout"].removesuffix("s")) > probe_timeout

    cmd = dockerfile.cmd
    assert cmd[0] == "gunicorn"
    assert cmd[cmd.index("--bind") + 1] == f"0.0.0.0:{IMAGE_PORT}"
    assert not {"--access-logfile", "--access-log"} & set(cmd)  # backend_kit logs requests


@IMAGES
def test_the_image_is_configured_with_the_services_own_prefix(image: Image) -> None:
    env = image.dockerfile.env
    settings = {name for name in env if name not in NOT_SETTINGS}
    assert settings, "no settings"
    assert all(name.startswith(image.prefix) for name in settings), settings
    # Writable data lives in the volume, never next to the code.
    assert env[f"{image.prefix}DATABASE_URL"].startswith("sqlite:////data/")
    assert image.dockerfile.last("VOLUME") == '["/data"]'


@IMAGES
def test_the_build_context_leaves_out_local_files(image: Image) -> None:
    ignored = (EXAMPLES / image.folder / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in ("**/__pycache__", "*.sqlite3", ".env", ".env.*"):
        assert pattern in ignored


# The health check and the command, run.


@dataclass
class Served:
    image: Image
    server: GunicornServer
    redis: RedisServer
    env: dict[str, str]

    def healthcheck(self, url: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the image's HEALTHCHECK command, pointed at this server (or at *url*)."""
        _, argv = self.image.dockerfile.healthcheck
        script = Path(sys.executable).with_name(argv[0])
        assert script.is_file(), f"{argv[0]} is not installed next to {sys.executable}"
        argv = [str(script), *argv[1:]]
        argv[argv.index(IMAGE_URL)] = url or self.server.url
        return subprocess.run(
            argv,
            cwd=EXAMPLES / self.image.folder,  # the image's WORKDIR
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def healthcheck_until(self, returncode: int) -> subprocess.CompletedProcess[str]:
        """Run the HEALTHCHECK until it exits with *returncode* (workers boot after gunicorn
        binds its port; a stopped dependency is noticed on the next probe); the last run
        after a generous deadline otherwise."""
        deadline = time.monotonic() + 30
        while (result := self.healthcheck()).returncode != returncode:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return result


@pytest.fixture(scope="module", params=[FLASK, DJANGO], ids=["flask", "django"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The example under gunicorn as its image runs it: its CMD's options and app, its ENV,
    the variables `docker run` would add, and a Redis of its own as the cache."""
    image: Image = request.param
    dockerfile = image.dockerfile
    tmp = tmp_path_factory.mktemp(f"image-{image.folder}")
    (tmp / "secrets").mkdir()
    cwd = EXAMPLES / image.folder
    with redis_server() as redis:
        run_settings = {
            **image.settings,
            "DATABASE_URL": f"sqlite:///{tmp / 'data.sqlite3'}",  # /data in the image
            "CACHE_URL": redis.url,
            "CACHE_TIMEOUT": "0.5",
            "HEALTH_CACHE_SECONDS": "0",
            # Found by the HEALTHCHECK only through the image's BACKEND_KIT_SETTINGS.
            "HEALTH_PATH_PREFIX": "/ops",
        }
        env = {
            **_clean_env(),
            **dockerfile.env,
            **{f"{image.prefix}{name}": value for name, value in run_settings.items()},
            "BACKEND_KIT_SECRETS_DIR": str(tmp / "secrets"),  # /run/secrets in the image
        }
        prepare(image.prepare, cwd=cwd, env=env)
        cmd = dockerfile.cmd
        bind = cmd.index("--bind")
        options = cmd[1:bind] + cmd[bind + 2 : -1]  # the loopback port replaces 0.0.0.0:8000
        with gunicorn_server(
            cmd[-1], cwd=cwd, env=env, log_path=tmp / "gunicorn.log", options=options
        ) as server:
            yield Served(image, server, redis, env)


def test_the_healthcheck_passes_once_the_command_serves(served: Served) -> None:
    """The CMD's app imports and serves; the HEALTHCHECK says so with exit status 0."""
    result = served.healthcheck_until(0)
    assert result.returncode == 0, result.stdout + result.stderr + served.server.output()
    assert result.stdout.startswith("ready: pass"), result.stdout


def test_the_healthcheck_fails_while_the_cache_is_down(served: Served) -> None:
    assert served.healthcheck_until(0).returncode == 0
    served.redis.stop()
    try:
        result = served.healthcheck_until(1)
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stdout.startswith("ready: fail"), result.stdout
    finally:
        served.redis.start()
    result = served.healthcheck_until(0)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_healthcheck_fails_when_nothing_serves(served: Served) -> None:
    result = served.healthcheck(f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach" in result.stderr
