"""Settings: every source, their precedence, prefixes and nesting, masking and errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
from pydantic_settings import SettingsConfigDict

import backend_kit
from backend_kit import ConfigError, Settings, get_settings, load_settings
from backend_kit.testing import override_settings


def secrets_dir() -> Path:
    return Path(os.environ["BACKEND_KIT_SECRETS_DIR"])


class Database(BaseModel):
    host: str = "localhost"
    port: int = 5432
    password: SecretStr | None = None


class AppSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="MYAPP_")

    db: Database = Database()
    workers: int = 4
    api_key: SecretStr | None = None


# --- defaults and the standard fields ------------------------------------------------


def test_defaults_need_no_configuration() -> None:
    settings = load_settings()
    assert settings.service_name == "service"
    assert settings.environment == "production"
    assert settings.log_format == "auto"
    assert settings.cache_url.get_secret_value() == "memory://"
    assert settings.database_url is None
    assert settings.source_of("log_level") == "default"


def test_standard_names_are_read_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "SERVICE_NAME": "billing",
        "ENVIRONMENT": "Staging",
        "DEBUG": "true",
        "RELEASE": "abc123",
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "JSON",
        "LOG_LEVELS": "urllib3=warning, django.db.backends=INFO",
        "SENTRY_DSN": "https://publickey@o1.ingest.example.com/42",
        "SENTRY_TRACES_SAMPLE_RATE": "0.25",
        "DATABASE_URL": "postgres://app:pw@db:5432/app",
        "CACHE_URL": "redis://cache:6379/1",
        "HEALTH_TOKEN": "health-token-value",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.service_name == "billing"
    assert settings.environment == "staging"
    assert settings.debug is True
    assert settings.release == "abc123"
    assert settings.log_level == "WARNING"
    assert settings.log_format == "json"
    assert settings.log_levels == {"urllib3": "WARNING", "django.db.backends": "INFO"}
    assert settings.sentry_dsn is not None
    assert settings.sentry_dsn.get_secret_value() == values["SENTRY_DSN"]
    assert settings.sentry_traces_sample_rate == 0.25
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == values["DATABASE_URL"]
    assert settings.cache_url.scheme == "redis"
    assert settings.health_token is not None
    assert settings.health_token.get_secret_value() == "health-token-value"
    assert settings.source_of("log_level") == "environment variable LOG_LEVEL"


def test_log_levels_accept_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVELS", '{"urllib3": "error"}')
    assert load_settings().log_levels == {"urllib3": "ERROR"}


def test_lists_accept_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDACT_KEYS", "ssn, card_number")
    assert load_settings().redact_keys == ("ssn", "card_number")


def test_lists_accept_json_for_items_with_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDACT_PATTERNS", r'["\\d{4,}", "iban"]')
    monkeypatch.setenv("SENTRY_TRACES_EXCLUDE_PATHS", '["/a,b"]')
    settings = load_settings()
    assert settings.redact_patterns == (r"\d{4,}", "iban")
    assert settings.sentry_traces_exclude_paths == ("/a,b",)
    assert backend_kit.Redactor.from_settings(settings).redact_text("card 12345678") == "card ***"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("[ssn", "is not a JSON list"), ("[1]", "REDACT_KEYS[0]: Input should be a valid string")],
)
def test_lists_given_as_bad_json_say_so(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("REDACT_KEYS", value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert expected in str(raised.value)


# --- every source and their precedence -----------------------------------------------

SOURCES = ["keyword", "environment", "dotenv_env", "dotenv", "secrets_dir", "file_ref"]


def _provide(source: str, value: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set SERVICE_NAME=*value* through *source*."""
    if source == "environment":
        monkeypatch.setenv("SERVICE_NAME", value)
    elif source == "dotenv_env":
        with Path(".env.staging").open("a") as fh:
            fh.write(f"SERVICE_NAME={value}\n")
    elif source == "dotenv":
        with Path(".env").open("a") as fh:
            fh.write(f"SERVICE_NAME={value}\n")
    elif source == "secrets_dir":
        (secrets_dir() / "service_name").write_text(value + "\n")
    elif source == "file_ref":
        path = tmp / "service-name.txt"
        path.write_text(value + "\n")
        monkeypatch.setenv("SERVICE_NAME_FILE", str(path))


@pytest.mark.parametrize("strongest", range(len(SOURCES)))
def test_precedence_strongest_source_wins(
    strongest: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each source provides a value; only sources from *strongest* down are present."""
    monkeypatch.setenv("ENVIRONMENT", "staging")
    present = SOURCES[strongest:]
    for source in present:
        if source != "keyword":
            _provide(source, f"from-{source}", tmp_path, monkeypatch)
    overrides = {"service_name": "from-keyword"} if "keyword" in present else {}
    settings = load_settings(**overrides)
    assert settings.service_name == f"from-{SOURCES[strongest]}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("environment", "environment variable SERVICE_NAME"),
        ("dotenv_env", "SERVICE_NAME in .env.staging"),
        ("dotenv", "SERVICE_NAME in .env"),
        ("secrets_dir", "in the secrets directory"),
        ("file_ref", "named by SERVICE_NAME_FILE"),
    ],
)
def test_source_is_recorded(
    source: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENVIRONMENT", "staging")
    _provide(source, "x-service", tmp_path, monkeypatch)
    settings = load_settings()
    assert settings.service_name == "x-service"
    assert expected in settings.source_of("service_name")


def test_environment_file_is_chosen_by_environment_in_dotenv() -> None:
    Path(".env").write_text("ENVIRONMENT=test\nLOG_LEVEL=INFO\n")
    Path(".env.test").write_text("LOG_LEVEL=DEBUG\n")
    Path(".env.production").write_text("LOG_LEVEL=ERROR\n")
    assert load_settings().log_level == "DEBUG"


def test_environment_file_follows_keyword_environment() -> None:
    Path(".env.development").write_text("LOG_LEVEL=DEBUG\n")
    assert load_settings(environment="development").log_level == "DEBUG"
    assert load_settings().log_level == "INFO"


def test_unsafe_environment_never_becomes_a_file_name(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env.x").write_text("LOG_LEVEL=DEBUG\n")
    monkeypatch.setenv("ENVIRONMENT", "../x")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert [p.variable for p in caught.value.problems] == ["ENVIRONMENT"]


def test_env_file_location_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "conf" / "service.env"
    env_file.parent.mkdir()
    env_file.write_text("SERVICE_NAME=from-custom-file\n")
    monkeypatch.setenv("BACKEND_KIT_ENV_FILE", str(env_file))
    assert load_settings().service_name == "from-custom-file"


def test_file_reference_in_dotenv(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("token-from-file\n")
    Path(".env").write_text(f"HEALTH_TOKEN_FILE={secret}\n")
    settings = load_settings()
    assert settings.health_token is not None
    assert settings.health_token.get_secret_value() == "token-from-file"


def test_missing_file_reference_is_a_clear_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL_FILE", "/nonexistent/db-url")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.variable == "DATABASE_URL"
    assert "DATABASE_URL_FILE" in problem.message
    assert "/nonexistent/db-url" in problem.message


def test_secrets_directory_values_lose_trailing_newline() -> None:
    (secrets_dir() / "DATABASE_URL").write_text("postgres://u:p@h/db\n")
    settings = load_settings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == "postgres://u:p@h/db"


def test_secrets_directory_accepts_links_inside_it() -> None:
    """Kubernetes mounts secrets as links into a hidden ``..data`` folder."""
    data = secrets_dir() / "..data"
    data.mkdir()
    (data / "health_token").write_text("inside-token")
    (secrets_dir() / "health_token").symlink_to(data / "health_token")
    settings = load_settings()
    assert settings.health_token is not None
    assert settings.health_token.get_secret_value() == "inside-token"


def test_secrets_directory_refuses_links_outside_it(tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.write_text("stolen-value")
    (secrets_dir() / "health_token").symlink_to(outside)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.variable == "HEALTH_TOKEN"
    assert "outside" in problem.message
    assert "refused" in problem.message
    assert "stolen-value" not in str(caught.value)


def test_explicit_secrets_directory_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND_KIT_SECRETS_DIR", "/nonexistent/secrets")
    with pytest.raises(ConfigError, match="BACKEND_KIT_SECRETS_DIR"):
        load_settings()


def test_keyword_secrets_dir(tmp_path: Path) -> None:
    (tmp_path / "service_name").write_text("from-kw-dir")
    assert Settings(_secrets_dir=tmp_path).service_name == "from-kw-dir"


# --- prefixes and nesting ------------------------------------------------------------


def test_prefix_applies_to_every_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "ERROR")  # unprefixed: ignored by a prefixed class
    monkeypatch.setenv("MYAPP_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("MYAPP_WORKERS", "8")
    settings = load_settings(AppSettings)
    assert settings.log_level == "DEBUG"
    assert settings.workers == 8


def test_nested_fields_use_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYAPP_DB__PORT", "6543")
    Path(".env").write_text("MYAPP_DB__HOST=db.internal\n")
    settings = load_settings(AppSettings)
    assert settings.db == Database(host="db.internal", port=6543)
    assert settings.source_of("db", "port") == "environment variable MYAPP_DB__PORT"
    assert settings.source_of("db", "host") == "MYAPP_DB__HOST in .env"


def test_nested_fields_from_secrets_directory_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    (secrets_dir() / "myapp_db__password").write_text("nested-secret")
    monkeypatch.setenv("MYAPP_DB", '{"host": "json-host"}')
    settings = load_settings(AppSettings)
    assert settings.db.host == "json-host"
    assert settings.db.password is not None
    assert settings.db.password.get_secret_value() == "nested-secret"


def test_nested_error_names_the_full_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYAPP_DB__PORT", "not-a-port")
    with pytest.raises(ConfigError) as caught:
        load_settings(AppSettings)
    (problem,) = caught.value.problems
    assert problem.variable == "MYAPP_DB__PORT"
    assert problem.source == "environment variable MYAPP_DB__PORT"
    assert "integer" in problem.message


def test_subclass_may_require_fields() -> None:
    class Required(Settings):
        api_url: str

    with pytest.raises(ConfigError) as caught:
        load_settings(Required)
    (problem,) = caught.value.problems
    assert problem.variable == "API_URL"
    assert problem.message == "required, but not set"


# --- errors --------------------------------------------------------------------------


def test_every_problem_is_reported_with_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    Path(".env").write_text("SENTRY_TRACES_SAMPLE_RATE=2\n")
    (secrets_dir() / "CACHE_URL").write_text("ftp://cache")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    problems = {p.variable: p for p in caught.value.problems}
    assert set(problems) == {"LOG_LEVEL", "SENTRY_TRACES_SAMPLE_RATE", "CACHE_URL"}
    assert problems["LOG_LEVEL"].source == "environment variable LOG_LEVEL"
    assert problems["SENTRY_TRACES_SAMPLE_RATE"].source == "SENTRY_TRACES_SAMPLE_RATE in .env"
    assert "secrets directory" in problems["CACHE_URL"].source
    assert "memory:// or redis://" in problems["CACHE_URL"].message
    report = str(caught.value)
    assert report.startswith("3 problems in the configuration of backend_kit.Settings:")
    assert "LOUD" not in report


def test_source_problems_and_field_problems_come_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTH_TOKEN_FILE", "/nonexistent")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert {p.variable for p in caught.value.problems} == {"HEALTH_TOKEN", "LOG_FORMAT"}


def test_config_error_is_not_chained_to_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEALTH_TOKEN", "canary-not-chained")
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_config_error_survives_pickling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own bytes
    assert copy.problems == caught.value.problems
    assert str(copy) == str(caught.value)


def test_secret_value_in_an_invalid_secret_field_never_appears(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canary = "canary-dsn-0f3c9e"
    monkeypatch.setenv("SENTRY_DSN", canary)
    monkeypatch.setenv("DATABASE_URL", f"no scheme {canary}-db")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    error = caught.value
    assert {p.variable for p in error.problems} == {"SENTRY_DSN", "DATABASE_URL"}
    for rendered in (str(error), repr(error), repr(error.errors()), repr(error.problems)):
        assert canary not in rendered


def test_bad_json_for_a_nested_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYAPP_DB", "{not json")
    with pytest.raises(ConfigError) as caught:
        load_settings(AppSettings)
    (problem,) = caught.value.problems
    assert problem.variable == "MYAPP_DB"
    assert "JSON" in problem.message


def test_load_settings_rejects_a_non_settings_class() -> None:
    with pytest.raises(TypeError, match=r"subclass of backend_kit\.Settings"):
        load_settings(dict)  # type: ignore[type-var]


def test_invalid_redact_pattern_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDACT_PATTERNS", "ok,(unclosed")
    with pytest.raises(ConfigError, match=r"pattern number 2: .\(unclosed. is not a valid regular"):
        load_settings()


# --- secrets never shown -------------------------------------------------------------


def test_secrets_are_masked_in_every_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://app:db-pass-4711@db:5432/app")
    monkeypatch.setenv("SENTRY_DSN", "https://dsnkey4711@o1.ingest.example.com/42")
    monkeypatch.setenv("HEALTH_TOKEN", "health-4711")
    monkeypatch.setenv("MYAPP_DATABASE_URL", "postgres://app:db-pass-4711@db:5432/app")
    monkeypatch.setenv("MYAPP_API_KEY", "api-4711")
    monkeypatch.setenv("MYAPP_DB__PASSWORD", "nested-4711")
    for settings in (load_settings(), load_settings(AppSettings)):
        renderings = [
            repr(settings),
            str(settings),
            repr(settings.model_dump()),
            settings.model_dump_json(),
            repr(settings.database_url),
        ]
        for rendering in renderings:
            assert "4711" not in rendering, rendering
    assert str(load_settings().database_url) == "postgres://app:***@db:5432/app"
    assert (
        load_settings().model_dump(mode="json")["sentry_dsn"]
        == "https://***@o1.ingest.example.com/42"
    )


def test_revealing_secrets_must_be_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYAPP_API_KEY", "api-4711")
    monkeypatch.setenv("MYAPP_DB__PASSWORD", "nested-4711")
    settings = load_settings(AppSettings)
    revealed = settings.model_dump(context={"reveal_secrets": True})
    assert revealed["api_key"] == "api-4711"
    assert revealed["db"]["password"] == "nested-4711"
    assert '"nested-4711"' in settings.model_dump_json(context={"reveal_secrets": True})


def test_secret_values_lists_credentials() -> None:
    from backend_kit._settings import secret_values

    settings = load_settings(
        database_url="postgres://app:pw-secret@db/app",
        health_token="tok-secret",
        cache_url="memory://",
    )
    values = secret_values(settings)
    assert "pw-secret" in values
    assert "postgres://app:pw-secret@db/app" in values
    assert "tok-secret" in values
    assert "memory://" not in values


# --- immutability and the active settings --------------------------------------------


def test_settings_are_immutable() -> None:
    settings = load_settings()
    with pytest.raises(TypeError, match="immutable") as caught:
        settings.health_token = SecretStr("never-shown-4711")  # type: ignore[misc]
    assert "4711" not in str(caught.value)
    with pytest.raises(TypeError, match="immutable"):
        del settings.service_name


def test_get_settings_loads_once_and_configure_replaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVICE_NAME", "first")
    first = get_settings()
    monkeypatch.setenv("SERVICE_NAME", "second")
    assert get_settings() is first
    chosen = load_settings(service_name="chosen")
    assert backend_kit.configure(chosen) is chosen
    assert get_settings() is chosen
    assert backend_kit.configure(chosen) is chosen  # safe to call twice


def test_get_settings_checks_the_class() -> None:
    backend_kit.configure(load_settings())
    with pytest.raises(TypeError, match=r"not tests\.test_settings\.AppSettings"):
        get_settings(AppSettings)


def test_override_settings_validates_and_restores() -> None:
    backend_kit.configure(load_settings(AppSettings))
    with override_settings(service_name="overridden", db__port=6000) as settings:
        assert get_settings() is settings
        assert settings.service_name == "overridden"
        assert isinstance(settings, AppSettings)
        assert settings.db.port == 6000
        assert settings.source_of("db", "port") == "override"
    assert get_settings().service_name == "service"
    with pytest.raises(ConfigError, match="LOG_LEVEL"), override_settings(log_level="LOUD"):
        pass
    with pytest.raises(TypeError, match="no field 'nope'"), override_settings(nope=1):
        pass


def test_override_settings_does_not_read_sources_again(monkeypatch: pytest.MonkeyPatch) -> None:
    backend_kit.configure(load_settings())
    monkeypatch.setenv("LOG_LEVEL", "LOUD")  # would fail if the environment were re-read
    with override_settings(service_name="x") as settings:
        assert settings.log_level == "INFO"
