"""URL credentials with any characters: everything up to the last "@" is userinfo."""

from __future__ import annotations

import io
import json
import os
import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend_kit import configure_logging, get_logger, load_settings
from backend_kit._redact import MASK, Redactor, mask_url, url_credential

REDACTOR = Redactor()

# Every printable ASCII character and any non-ASCII text (no surrogates).
any_password = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(string.printable),
    min_size=1,
    max_size=30,
)
users = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8)
schemes = st.sampled_from(["postgres", "postgresql", "redis", "rediss", "https", "amqp"])


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://app:p@ssw0rd@db/app", "postgres://app:***@db/app"),
        ("postgres://app:Hunter2/xyz@db:5432/app", "postgres://app:***@db:5432/app"),
        ("postgres://app:a#b?c:d@db/app", "postgres://app:***@db/app"),
        ("redis://:s3cr%40t@cache:6379/0", "redis://:***@cache:6379/0"),
        ("redis://p@ss@cache", "redis://***@cache"),
        ("https://key123@o1.ingest.sentry.io/1", "https://***@o1.ingest.sentry.io/1"),
        ("postgres://app:pässwörd€@db/app", "postgres://app:***@db/app"),
        ("postgres://db:5432/app", "postgres://db:5432/app"),
        ("memory://", "memory://"),
    ],
)
def test_mask_url(url: str, expected: str) -> None:
    assert mask_url(url) == expected
    assert REDACTOR.redact_text(f"connecting to {url} now") == f"connecting to {expected} now"


@given(scheme=schemes, user=users, password=any_password)
def test_a_url_password_of_any_characters_is_masked(scheme: str, user: str, password: str) -> None:
    url = f"{scheme}://{user}:{password}@db.internal:5432/app"
    assert mask_url(url) == f"{scheme}://{user}:{MASK}@db.internal:5432/app"
    assert url_credential(url) == password


@given(
    scheme=schemes,
    user=users,
    password=any_password.filter(lambda p: not any(c.isspace() for c in p)),
)
def test_a_url_password_of_any_characters_is_masked_in_free_text(
    scheme: str, user: str, password: str
) -> None:
    # In free text a URL ends at whitespace: a password holding whitespace is masked as
    # an exact secret value of the settings, not by its shape.
    text = f"could not connect to {scheme}://{user}:{password}@db.internal:5432/app (refused)"
    assert REDACTOR.redact_text(text) == (
        f"could not connect to {scheme}://{user}:{MASK}@db.internal:5432/app (refused)"
    )


def _valid_escapes(password: str) -> str:
    # A "%" starts a percent-escape in a URL; a literal one is written %25.
    return password.replace("%", "%25")


@settings(max_examples=60, deadline=None)
@given(password=any_password.map(lambda p: "Zq9" + p))
def test_settings_never_show_a_url_password(password: str) -> None:
    url = f"postgres://app:{_valid_escapes(password)}@db.internal:5432/app"
    cache_url = "redis" + url[len("postgres") : -len("/app")] + "/0"
    loaded = load_settings(database_url=url, cache_url=cache_url)
    shown = "postgres://app:***@db.internal:5432/app"
    assert str(loaded.database_url) == shown
    assert repr(loaded.database_url) == f"SecretURL('{shown}')"
    dumped = json.loads(loaded.model_dump_json())
    assert dumped["database_url"] == shown
    assert dumped["cache_url"] == "redis://app:***@db.internal:5432/0"
    assert str(loaded.model_dump()["database_url"]) == shown
    secret = _valid_escapes(password)
    for output in (str(loaded), repr(loaded), loaded.model_dump_json(), repr(loaded.model_dump())):
        assert secret not in output
    # The exact value is masked wherever it appears, with no URL around it.
    redactor = Redactor.from_settings(loaded)
    assert secret not in redactor.redact_text(f"the password is {secret}.")


def test_the_issue_examples_in_every_rendering() -> None:
    loaded = load_settings(database_url="postgres://app:Hunter2/xyz@db:5432/app")
    for output in (str(loaded), repr(loaded), loaded.model_dump_json(), repr(loaded.model_dump())):
        assert "Hunter2" not in output
        assert "xyz" not in output


def test_a_log_line_never_shows_a_url_password() -> None:
    stream = io.StringIO()
    configure_logging(load_settings(), format="json", stream=stream)
    log = get_logger("test")
    log.error("connect failed", url="postgres://app:Hu/n#t?er:2@x@db:5432/app")
    log.error("connect to postgres://app:Hu/n#t?er:2@x@db:5432/app failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert "postgres://app:***@db:5432/app" in line
        assert "Hu/n" not in line
        assert "er:2" not in line


def _run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BACKEND_KIT_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "backend_kit.cli", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("output_format", ["table", "json"])
def test_config_show_masks_what_the_logs_mask(tmp_path: Path, output_format: str) -> None:
    (tmp_path / "payments.py").write_text(
        "from backend_kit import Settings\n"
        "class PaymentSettings(Settings):\n"
        "    stripe_api_key: str = ''\n"
        "    support_email: str = 'help@example.com'\n"
    )
    result = _run_cli(
        tmp_path,
        "config",
        "show",
        "--format",
        output_format,
        BACKEND_KIT_SETTINGS="payments:PaymentSettings",
        STRIPE_API_KEY="sk_live_canary4711",
        DATABASE_URL="postgres://app:Hunter2/xyz@db:5432/app",
        COLUMNS="250",
    )
    assert result.returncode == 0, result.stderr
    for leaked in ("sk_live_canary4711", "Hunter2", "xyz"):
        assert leaked not in result.stdout
    assert "postgres://app:***@db:5432/app" in result.stdout
    assert "help@example.com" in result.stdout
    if output_format == "json":
        rows = {row["variable"]: row for row in json.loads(result.stdout)["variables"]}
        assert rows["STRIPE_API_KEY"]["value"] == MASK
        assert rows["STRIPE_API_KEY"]["secret"] is False


# --- URL settings are validated at load -------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "url", "message"),
    [
        ("DATABASE_URL", "postgres://app:pw4711@db:notaport/app", "'notaport' is not a number"),
        ("DATABASE_URL", "postgres://app:pw4711@db:99999/app", "'99999' is not a number"),
        ("DATABASE_URL", "postgres://app:pw4711@db:0/app", "'0' is not a number"),
        ("DATABASE_URL", "postgres://app:pw%zz4711@db/app", "does not start a percent-escape"),
        ("DATABASE_URL", "ftp://app:pw4711@db/app", "the scheme ftp:// is not supported"),
        ("DATABASE_URL", "db.internal/app", "expected a URL such as postgres://"),
        ("CACHE_URL", "redis://:pw4711@cache:65536/0", "the port must be a number from 1 to 65535"),
        ("CACHE_URL", "postgres://cache:6379", "expected memory:// or redis://host:port/db"),
        ("CACHE_URL", "redis://:pw4711@cache:6379/zero", "the database must be a number"),
        ("SENTRY_DSN", "https://pw4711@o1.ingest.example.com:70000/1", "'70000' is not a"),
    ],
)
def test_a_broken_url_is_refused_at_load_without_showing_it(
    tmp_path: Path, variable: str, url: str, message: str
) -> None:
    result = _run_cli(tmp_path, "config", "check", **{variable: url})
    assert result.returncode == 2
    assert variable in result.stderr
    assert message in result.stderr
    assert "pw4711" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "url",
    [
        "postgres://app:p%40ss@db:5432/app",
        "postgresql://[::1]:5432/app",
        "sqlite:///relative.sqlite3",
        "sqlite://:memory:",
        "mysql://app:pw@db/app",
    ],
)
def test_good_database_urls_load(url: str) -> None:
    assert load_settings(database_url=url).database_url is not None


def test_health_output_never_shows_a_url_password() -> None:
    from backend_kit.health import HealthRegistry, HealthRunner

    registry = HealthRegistry()

    @registry.check
    def queue() -> None:
        raise ConnectionError("refused by amqp://app:p@ss/w#rd?x@mq.internal:5672/")

    report = HealthRunner(registry, cache_seconds=0).ready()
    text = json.dumps(report.to_dict(detailed=True))
    assert "amqp://app:***@mq.internal:5672/" in text
    for fragment in ("p@ss", "w#rd", "?x@"):
        assert fragment not in text
