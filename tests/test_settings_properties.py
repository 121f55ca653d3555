"""Properties of settings loading that must hold for any input (hypothesis)."""

from __future__ import annotations

import os
import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend_kit import ConfigError, Settings
from backend_kit.cli import main

# Characters that survive every source unchanged: the environment, a dotenv line and a
# secrets file.
SAFE = string.ascii_letters + string.digits + "-_.,/+@%^*()[]{}~"
safe_text = st.text(alphabet=SAFE, min_size=1, max_size=24)

LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
BOOLEANS = {"0", "1", "true", "false", "t", "f", "yes", "no", "y", "n", "on", "off"}

BAD_VALUES: dict[str, st.SearchStrategy[str]] = {
    "LOG_LEVEL": safe_text.filter(lambda v: v.strip().upper() not in LEVELS),
    "LOG_FORMAT": safe_text.filter(lambda v: v.strip().lower() not in {"console", "json", "auto"}),
    "DEBUG": safe_text.filter(lambda v: v.strip().lower() not in BOOLEANS),
    "SENTRY_TRACES_SAMPLE_RATE": st.floats(min_value=1.001, max_value=1e9).map(repr),
    "SENTRY_SAMPLE_RATE": st.floats(min_value=-1e9, max_value=-0.001).map(repr),
    "CACHE_URL": safe_text.filter(lambda v: "://" not in v),
    "DATABASE_URL": safe_text.filter(lambda v: "://" not in v),
    "LOG_LEVELS": safe_text.filter(
        lambda v: (
            "=" not in v and not v.strip().startswith("{") and v.replace(",", "").strip() != ""
        )
    ),
}
SOURCES = ("environment", "dotenv", "secrets")


@contextmanager
def configured_sources(assignments: dict[str, tuple[str, str]]) -> Iterator[Path]:
    """Apply ``{VARIABLE: (source, value)}``; yields a directory holding .env and secrets/."""
    saved = dict(os.environ)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "secrets").mkdir()
        dotenv_lines = []
        for variable, (source, value) in assignments.items():
            if source == "environment":
                os.environ[variable] = value
            elif source == "dotenv":
                dotenv_lines.append(f"{variable}={value}")
            else:
                (root / "secrets" / variable).write_text(value)
        (root / ".env").write_text("\n".join(dotenv_lines) + "\n")
        try:
            yield root
        finally:
            os.environ.clear()
            os.environ.update(saved)


def _load(root: Path) -> Settings:
    return Settings(_env_file=root / ".env", _secrets_dir=root / "secrets")


bad_assignments = st.dictionaries(
    keys=st.sampled_from(sorted(BAD_VALUES)),
    values=st.sampled_from(SOURCES),
    min_size=1,
).flatmap(
    lambda chosen: st.fixed_dictionaries(
        {name: st.tuples(st.just(source), BAD_VALUES[name]) for name, source in chosen.items()}
    )
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_assignments)
def test_every_bad_value_is_reported_with_its_source(
    assignments: dict[str, tuple[str, str]],
) -> None:
    with configured_sources(assignments) as root:
        try:
            _load(root)
        except ConfigError as error:
            problems = {p.variable: p for p in error.problems}
        else:
            raise AssertionError("invalid settings were accepted")
    assert set(problems) == set(assignments)
    for variable, (source, _) in assignments.items():
        expected = {
            "environment": f"environment variable {variable}",
            "dotenv": f"{variable} in",
            "secrets": "in the secrets directory",
        }[source]
        assert expected in problems[variable].source


canaries = st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=24).map(
    lambda s: f"CANARY{s}"
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    canary=canaries,
    secret_field=st.sampled_from(["HEALTH_TOKEN", "DATABASE_URL", "SENTRY_DSN", "CACHE_URL"]),
    shape=st.sampled_from(["bare", "url-password", "url-key"]),
    source=st.sampled_from(SOURCES),
    bad=st.dictionaries(
        st.sampled_from(["LOG_LEVEL", "DEBUG", "LOG_FORMAT"]), st.sampled_from(SOURCES)
    ),
)
def test_a_secret_never_appears_in_any_output(
    canary: str, secret_field: str, shape: str, source: str, bad: dict[str, str]
) -> None:
    value = {
        "bare": canary,
        "url-password": f"redis://user:{canary}@host:6379/0",
        "url-key": f"https://{canary}@o1.ingest.example.com/7",
    }[shape]
    assignments = {secret_field: (source, value)}
    assignments.update({name: (where, "definitely-not-valid") for name, where in bad.items()})
    with configured_sources(assignments) as root:
        outputs: list[str] = []
        try:
            loaded = _load(root)
        except ConfigError as error:
            outputs += [str(error), repr(error), repr(error.errors()), repr(error.problems)]
        else:
            outputs += [
                repr(loaded),
                str(loaded),
                repr(loaded.model_dump()),
                loaded.model_dump_json(),
            ]
        env = {
            "BACKEND_KIT_ENV_FILE": str(root / ".env"),
            "BACKEND_KIT_SECRETS_DIR": str(root / "secrets"),
        }
        runner = CliRunner()
        for command in (["check"], ["show"], ["show", "--format", "json"]):
            result = runner.invoke(main, ["config", *command], env=env)
            outputs.append(result.output)
    for output in outputs:
        assert canary not in output
