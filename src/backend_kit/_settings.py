"""The settings model every backend_kit module reads: fields, validation and loading.

The active-settings slot lives in `_active`, importing a class by its dotted path in
`_class_import`, and what counts as secret in `_secrets`.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, overload
from urllib.parse import urlsplit

import orjson
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ._errors import ConfigError, ConfigProblem
from ._redact import UnsafePatternError, compile_linear_pattern
from ._redis_clients import parse_redis_url
from ._secrets import SecretURL, secret_paths, secret_values
from ._sources import problems_from_validation, resolve_sources, variable_name

__all__ = [
    "Environment",
    "LogFormat",
    "LogLevel",
    "SecretURL",
    "Settings",
    "load_settings",
    "secret_values",
]

Environment = Literal["development", "test", "staging", "production"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["console", "json", "auto"]

S = TypeVar("S", bound="Settings")


_URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_BROKEN_PERCENT_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
#: The schemes each URL setting's users understand (Django's database config and the
#: health checks; the cache backends).
DATABASE_SCHEMES = ("postgres", "postgresql", "pgsql", "sqlite", "sqlite3", "mysql", "mariadb")
CACHE_SCHEMES = ("memory", "redis", "rediss", "unix")


def check_percent_escapes(url: str) -> None:
    """Raise `ValueError` when a ``%`` in *url* does not start a percent-escape."""
    if _BROKEN_PERCENT_ESCAPE.search(url) is not None:
        raise ValueError(
            "a '%' does not start a percent-escape (%XX); write a literal % as %25, "
            "and escape the other reserved characters of a password the same way"
        )


def check_url(url: str, *, schemes: tuple[str, ...], example: str) -> None:
    """Raise `ValueError` unless *url* has one of *schemes*, a port from 1 to 65535 (when
    it has one) and well-formed percent-escapes. The message never quotes the URL: its
    userinfo (everything up to the last ``@``) may hold a password of any characters."""
    match = _URL_SCHEME.match(url)
    if match is None:
        raise ValueError(f"expected a URL such as {example}")
    scheme = match.group(1).lower()
    if scheme not in schemes:
        raise ValueError(
            f"the scheme {scheme}:// is not supported here; expected {example} "
            "(schemes: " + ", ".join(f"{name}://" for name in schemes) + ")"
        )
    check_percent_escapes(url)
    rest = url[match.end() :]
    after_userinfo = rest[rest.rfind("@") + 1 :]
    authority = re.split(r"[/?#]", after_userinfo, maxsplit=1)[0]
    if scheme.startswith("sqlite") or scheme in ("memory", "unix"):
        return  # no network address (sqlite://:memory: is a path, not a port)
    if authority.startswith("["):
        _, _, after_host = authority.partition("]")
        port = after_host[1:] if after_host.startswith(":") else None
    else:
        _, colon, port_text = authority.partition(":")
        port = port_text if colon else None
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(f"the port {port!r} is not a number from 1 to 65535 (expected {example})")
    if scheme in ("redis", "rediss"):
        # redis-py reads the path as the database number.
        path = re.split(r"[?#]", after_userinfo[len(authority) :], maxsplit=1)[0].strip("/")
        if path and not (path.isascii() and path.isdigit()):
            raise ValueError(
                f"the path /{path} is not a database number (expected {example}, "
                "for example redis://cache:6379/0)"
            )


def _split_list(value: Any) -> Any:
    """Accept ``a,b,c`` as well as a JSON list or a real list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            # The JSON form, for items that contain a comma (a regular expression).
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise ValueError(
                    "starts with '[' but is not a JSON list; write a JSON list of strings "
                    'such as ["a", "b,c"], or comma-separated items'
                ) from None
            return parsed
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


# Validation runs inside Settings.__init__; this flag lets `replace_settings` validate
# known values without reading the environment and files again.
_skip_sources: ContextVar[bool] = ContextVar("backend_kit_skip_sources", default=False)


class Settings(BaseSettings):
    """Typed settings for a service, read from the environment and files.

    Subclass it to add your own fields; every field is read from the variable of the
    same name in upper case (``service_name`` from ``SERVICE_NAME``), after the class's
    ``env_prefix`` if it sets one. Nested models use ``__`` (``MYAPP_DB__PORT``).

    Sources, strongest first: keyword arguments, the environment, ``.env.{ENVIRONMENT}``,
    ``.env``, the secrets directory (one file per variable, default ``/run/secrets``),
    ``<NAME>_FILE`` variables naming a file that holds the value, then defaults.

    Construction never raises pydantic's ``ValidationError`` (which echoes inputs): it
    raises `backend_kit.ConfigError`, listing every problem without any value.
    Instances are immutable.
    """

    model_config = SettingsConfigDict(
        env_prefix="",
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        validate_default=True,
        env_file=".env",
        env_file_encoding="utf-8",
        secrets_dir="/run/secrets",
        # The validation schema is built when the first settings are loaded, not at
        # import: a process that imports backend_kit without loading settings (a CLI's
        # --help, the pytest plugin) does not pay for it.
        defer_build=True,
    )

    service_name: str = Field(
        default="service",
        min_length=1,
        description="Name of the service, attached to every log line and Sentry event.",
    )
    environment: Environment = Field(
        default="production",
        description="Where the service runs: development, test, staging or production. "
        "Also selects the .env.{ENVIRONMENT} file.",
    )
    debug: bool = Field(default=False, description="Framework debug mode. Never in production.")
    release: str | None = Field(
        default=None, description="Release or version identifier (a git SHA or a tag)."
    )
    log_level: LogLevel = Field(default="INFO", description="Lowest level that is logged.")
    log_format: LogFormat = Field(
        default="auto",
        description="console (readable), json (one object per line) or auto "
        "(console on a terminal, json otherwise).",
    )
    log_levels: Annotated[dict[str, LogLevel], NoDecode] = Field(
        default_factory=dict,
        description="Per-logger levels, for example urllib3=WARNING,django.db.backends=INFO.",
    )
    log_traceback_locals: bool = Field(
        default=False,
        description="Show frame local variables in logged tracebacks and Sentry events "
        "(redacted like everything else). Off by default: locals often hold secrets.",
    )
    redact_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Extra key names whose values are masked in logs, Sentry events and "
        "health output, comma-separated.",
    )
    redact_patterns: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Extra regular expressions whose matches are masked, comma-separated "
        "or a JSON list (for a pattern that contains a comma). They run on RE2, in time "
        "linear in the text: backreferences and lookaround are refused at load.",
    )
    redact_max_length: int = Field(
        default=65536,
        ge=256,
        le=16 * 1024 * 1024,
        description="Longest text the redaction policy scans, in characters; a longer "
        "log value, Sentry field or error message is cut to this length, with a marker, "
        "before it is scanned.",
    )
    redact_card_numbers: bool = Field(
        default=True,
        description="Mask Luhn-valid payment card numbers (13 to 19 digits, with or "
        "without spaces or dashes) down to their last four digits, in logs, Sentry "
        "events and health output alike.",
    )
    sentry_dsn: SecretURL | None = Field(
        default=None, description="Sentry DSN. Without it, nothing is sent to Sentry."
    )
    sentry_sample_rate: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of error events sent to Sentry."
    )
    sentry_traces_sample_rate: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of requests traced by Sentry."
    )
    sentry_traces_exclude_paths: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="Request paths never traced by Sentry, comma-separated, in addition "
        "to the health endpoints (which never are).",
    )
    sentry_send_request_bodies: bool = Field(
        default=False,
        description="Send request bodies with Sentry events. Off by default: bodies hold "
        "personal data. When on, a body passes through the redaction policy, nested "
        "objects and arrays included.",
    )
    sentry_send_client_ip: bool = Field(
        default=False,
        description="Send the client's IP address with Sentry events. Off by default: "
        "an IP address is personal data.",
    )
    database_url: SecretURL | None = Field(
        default=None,
        description="Database URL, for example postgres://user:password@host:5432/dbname "
        "or sqlite:///path/to/db.sqlite3.",
    )
    cache_url: SecretURL = Field(
        default=SecretURL("memory://"),
        description="Cache backend: memory:// (in-process), or a Redis shared between "
        "processes: redis://host:port/db, rediss://host:port/db (TLS), "
        "unix:///path/to/redis.sock, redis+sentinel://[password@]host1:port1,host2:port2/"
        "service_name/db or redis+cluster://host1:port1,host2:port2.",
    )
    cache_serializer: Literal["json", "pickle"] = Field(
        default="json",
        description="How cached values are stored in Redis: json (safe, JSON types only) "
        "or pickle (any picklable value; requires CACHE_SIGNING_KEY).",
    )
    cache_signing_key: SecretStr | None = Field(
        default=None,
        description="Secret key (at least 16 characters) that signs pickled cache values "
        "with HMAC-SHA256; a value whose signature does not match is ignored.",
    )
    cache_signing_key_fallbacks: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        default=(),
        description="Previous signing keys, comma-separated, while CACHE_SIGNING_KEY is "
        "rotated: a value signed with one of them is still read, then written again "
        "with the current key. Remove them once the longest cache TTL has passed.",
    )
    cache_timeout: float = Field(
        default=0.5,
        gt=0.0,
        le=60.0,
        description="Connect and read timeout for the cache server, in seconds.",
    )
    cache_key_prefix: str | None = Field(
        default=None,
        description="Prefix of every key written to Redis; defaults to SERVICE_NAME "
        "followed by a colon, so services sharing a Redis do not collide.",
    )
    redis_ssl_ca_certs: Path | None = Field(
        default=None,
        description="CA bundle (PEM) that verifies the certificate of every Redis the "
        "kit connects to over TLS (rediss://), unless the URL sets ssl_ca_certs; "
        "default: the system's CAs.",
    )
    redis_ssl_certfile: Path | None = Field(
        default=None,
        description="Client certificate (PEM) for Redis servers that authenticate "
        "clients by certificate, unless the URL sets ssl_certfile.",
    )
    redis_ssl_keyfile: Path | None = Field(
        default=None,
        description="Private key (PEM) of REDIS_SSL_CERTFILE, unless the URL sets ssl_keyfile.",
    )
    redis_ssl_cert_reqs: Literal["required", "optional", "none"] = Field(
        default="required",
        description="Whether the Redis server's certificate must be valid (required), "
        "is checked if sent (optional) or not checked (none), unless the URL sets "
        "ssl_cert_reqs.",
    )
    health_token: SecretStr | None = Field(
        default=None,
        description="Bearer token that unlocks the detailed health report.",
    )
    health_path_prefix: str = Field(
        default="",
        pattern=r"^(/[A-Za-z0-9._~\-/]*)?$",
        description="Path under which /livez, /readyz, /healthz and /startupz are served, "
        "for example /ops; empty for the root.",
    )
    health_cache_seconds: float = Field(
        default=2.0,
        ge=0.0,
        description="How long a health check result (failures included) is reused by "
        "later probes, in seconds; 0 runs the checks on every probe.",
    )
    health_check_timeout: float = Field(
        default=0.8,
        gt=0.0,
        description="Timeout of a health check that sets none of its own, in seconds. "
        "The default answers within Kubernetes' default probe timeout of 1 s.",
    )
    health_deadline: float = Field(
        default=0.9,
        gt=0.0,
        description="Longest time a readiness probe waits for all its checks, in seconds; "
        "keep it under the orchestrator's probe timeout.",
    )
    database_statement_timeout: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description="Longest time one database statement may run, in seconds; also bounds "
        "the database read timeout and the SQLite busy timeout. Keep it below the server's "
        "worker timeout (gunicorn: 30 s) so a hung database fails the request instead of "
        "the worker being killed.",
    )
    health_shared_dir: Path | None = Field(
        default=None,
        description="Directory the worker processes of one service share (a tmpfs such as "
        "/dev/shm/<service>): each check result is written there and every worker answers "
        "with the newest, so readiness changes once for all workers instead of flapping; "
        "unset, each process keeps its own results.",
    )
    health_max_stuck_runs: int = Field(
        default=2,
        ge=1,
        le=100,
        description="How many runs of one check may hang at once (abandoned after their "
        "timeout, still alive); at this bound a probe reports the check as hung without "
        "starting another run.",
    )
    trusted_proxies: int = Field(
        default=0,
        ge=0,
        le=10,
        description="How many reverse proxies in front of the service append to "
        "X-Forwarded-For; 0 trusts none and logs the peer address.",
    )
    shutdown_drain_seconds: float = Field(
        default=5.0,
        ge=0.0,
        le=300.0,
        description="After SIGTERM, how long the service keeps serving with readiness "
        "failing (and Connection: close on every response) before it stops, in seconds; "
        "give the load balancer time to take it out. 0 stops at once.",
    )
    log_max_line_bytes: int | None = Field(
        default=None,
        ge=1024,
        description="Longest log line written, in bytes (JSON format): longer lines have "
        "their longest values shortened, with a marker, and a traceback keeps its first "
        "and last frames. Unset writes every line whole. 16384 suits container runtimes "
        "that split longer lines.",
    )
    health_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port on which each gunicorn worker also answers /livez, /readyz and "
        "/startupz (and /metrics with METRICS_ENABLED) from a thread of its own "
        "(backend_kit.gunicorn), so probes never wait behind busy request threads; unset "
        "serves them on the main port only.",
    )
    metrics_enabled: bool = Field(
        default=False,
        description="Record Prometheus metrics and serve them at METRICS_PATH "
        '(needs the metrics extra: pip install "backend-kit[metrics]").',
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token a scraper presents to read the metrics; without it, "
        "metrics are served only when ENVIRONMENT is development.",
    )
    metrics_path: str = Field(
        default="/metrics",
        pattern=r"^/[A-Za-z0-9._~\-/]*$",
        description="Path at which every adapter serves the metrics.",
    )
    metrics_multiproc_dir: Path | None = Field(
        default=None,
        description="Directory the gunicorn workers of one service share for their "
        "metrics (backend_kit.gunicorn); emptied when gunicorn starts. Unset: a directory "
        "per service and master process under the system's temporary directory.",
    )
    celery_broker_url: SecretURL | None = Field(
        default=None,
        description="Celery broker, for example redis://host:6379/1 or "
        "amqp://user:password@host:5672//; backend_kit.celery.init_celery() sets it on the "
        "Celery app, and the worker's readiness probe checks it.",
    )
    celery_log_task_args: bool = Field(
        default=False,
        description="Show task arguments (through the redaction policy) in Celery's log "
        "lines; by default they are replaced by a placeholder.",
    )
    celery_heartbeat_file: Path | None = Field(
        default=None,
        description="File a Celery worker touches on every heartbeat, for its liveness "
        "probe; default: backend_kit-celery-worker.heartbeat in the temporary directory.",
    )
    celery_heartbeat_seconds: float = Field(
        default=10.0,
        gt=0.0,
        description="How often a Celery worker touches its heartbeat file, in seconds; "
        "liveness fails when the file is three intervals old.",
    )
    # Outbound HTTP (backend_kit.http): timeouts, retries, the retry budget and the
    # per-host circuit breaker.
    http_connect_timeout: float = Field(
        default=3.0,
        gt=0,
        description="Seconds an outbound HTTP call (backend_kit.http) waits to connect.",
    )
    http_read_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds an outbound HTTP call waits for each read of the response "
        "(and each write of the request).",
    )
    http_retry_attempts: int = Field(
        default=3,
        ge=1,
        le=20,
        description="Most attempts of one outbound HTTP call, the first included; 1 turns "
        "retries off.",
    )
    http_retry_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Seconds after the first attempt of an outbound HTTP call past which "
        "no retry starts, including the waits a Retry-After header asks for.",
    )
    http_retry_budget: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Share of extra load retries may add to one target host: over the "
        "budget window, retries are at most this share of first attempts.",
    )
    http_retry_budget_window: float = Field(
        default=10.0,
        gt=0,
        description="Seconds of the sliding window over which the retry budget counts.",
    )
    http_breaker_failures: int = Field(
        default=5,
        ge=1,
        description="Consecutive failed outbound calls to one host that open its circuit.",
    )
    http_breaker_recovery_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a host's open circuit fails calls fast before a probe call.",
    )

    _sources: dict[tuple[str, ...], str] = PrivateAttr(default_factory=dict)

    def __init__(
        self,
        *,
        _env_file: str | Path | None = None,
        _secrets_dir: str | Path | None = None,
        **values: Any,
    ) -> None:
        resolved: dict[str, Any]
        sources: dict[tuple[str, ...], str]
        problems: list[ConfigProblem]
        if _skip_sources.get():
            resolved, sources, problems = values, {}, []
        else:
            resolved, sources, problems = resolve_sources(
                type(self), values, env_file=_env_file, secrets_dir=_secrets_dir
            )
        error: ConfigError | None = None
        try:
            # Validate even after a source problem, so the error lists every problem.
            super(BaseSettings, self).__init__(**resolved)
        except ValidationError as exc:
            # Built here and raised below, outside the handler, so the pydantic error
            # (which holds the inputs) is not chained onto ours.
            error = _config_error(type(self), exc, resolved, sources, problems)
        if error is None and problems:
            error = ConfigError(problems, settings_name=qualified_name(type(self)))
        if error is not None:
            raise error
        self._sources = sources

    @field_validator("environment", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_levels", mode="before")
    @classmethod
    def _parse_log_levels(cls, value: Any) -> Any:
        text = value.strip() if isinstance(value, str) else ""
        if text.startswith("{"):
            try:
                value = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise ValueError(
                    "expected logger=LEVEL pairs separated by commas, or a JSON object"
                ) from None
        if isinstance(value, dict):
            return {k: v.strip().upper() if isinstance(v, str) else v for k, v in value.items()}
        if not isinstance(value, str):
            return value
        levels: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, level = item.partition("=")
            if not sep or not name.strip():
                raise ValueError(
                    "expected logger=LEVEL pairs separated by commas, "
                    "for example urllib3=WARNING,django.db.backends=INFO"
                )
            levels[name.strip()] = level.strip().upper()
        return levels

    @field_validator(
        "redact_keys",
        "redact_patterns",
        "sentry_traces_exclude_paths",
        "cache_signing_key_fallbacks",
        mode="before",
    )
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("redact_patterns")
    @classmethod
    def _compile_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, pattern in enumerate(value):
            try:
                compile_linear_pattern(pattern)
            except UnsafePatternError as exc:
                raise ValueError(f"pattern number {index + 1}: {exc}") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: SecretURL | None) -> SecretURL | None:
        if value is not None:
            check_url(
                value.get_secret_value(),
                schemes=DATABASE_SCHEMES,
                example="postgres://user:password@host:5432/dbname or sqlite:///path/to/db.sqlite3",
            )
        return value

    @field_validator("cache_url")
    @classmethod
    def _check_cache_url(cls, value: SecretURL) -> SecretURL:
        url = value.get_secret_value()
        if value.scheme == "memory":
            check_url(url, schemes=CACHE_SCHEMES, example="memory:// or redis://host:port/db")
            return value

        check_percent_escapes(url)
        try:
            parse_redis_url(url)
        except ValueError as exc:
            message = str(exc)
            if message.startswith("expected redis://"):
                message = "expected memory:// or " + message.removeprefix("expected ")
            raise ValueError(message) from None
        return value

    @field_validator("redis_ssl_ca_certs", "redis_ssl_certfile", "redis_ssl_keyfile")
    @classmethod
    def _check_redis_tls_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no file at {value}")
        if (
            value is not None
            and info.field_name == "redis_ssl_keyfile"
            and info.data.get("redis_ssl_certfile") is None
        ):
            raise ValueError("set REDIS_SSL_CERTFILE too: the key belongs to a certificate")
        return value

    @field_validator("cache_signing_key")
    @classmethod
    def _check_cache_signing_key(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("expected at least 16 characters; use a long random secret")
        if value is None and info.data.get("cache_serializer") == "pickle":
            # Named as the user sets it, with the class's prefix (SHOP_CACHE_SERIALIZER).
            serializer = variable_name(cls, ("cache_serializer",))
            raise ValueError(
                f"required when {serializer}=pickle, so pickled values are signed; "
                f"set it to a long random secret, or use {serializer}=json"
            )
        return value

    @field_validator("sentry_dsn")
    @classmethod
    def _check_dsn(cls, value: SecretURL | None) -> SecretURL | None:
        if value is None:
            return None
        check_url(
            value.get_secret_value(),
            schemes=("http", "https"),
            example="https://<key>@<host>/<project-id>",
        )
        parts = urlsplit(value.get_secret_value())
        if not parts.username or not parts.hostname:
            raise ValueError(
                "expected a Sentry DSN such as https://<key>@<host>/<project-id> "
                "(copy it from the project's Client Keys page)"
            )
        return value

    @model_serializer(mode="wrap")
    def _serialize(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        reveal = bool(info.context and info.context.get("reveal_secrets"))
        if not reveal and info.mode != "json":
            return data
        for path, secret in secret_paths(self):
            target: Any = data
            for part in path[:-1]:
                if isinstance(target, dict):
                    if isinstance(target.get(part), tuple):
                        target[part] = list(target[part])  # a list of secrets, in place
                    target = target.get(part)
                else:
                    target = None
            key: Any = path[-1]
            if isinstance(target, list) and key.isdigit() and int(key) < len(target):
                key = int(key)
            elif not (isinstance(target, dict) and key in target):
                continue
            if reveal:
                target[key] = secret.get_secret_value()
            elif isinstance(secret, SecretURL):
                target[key] = str(secret)
        return data

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
            return
        # pydantic's own frozen error would quote the value, which may be a secret.
        raise TypeError(
            f"{type(self).__name__} is immutable: {name!r} cannot be changed after loading. "
            "Load new settings, or use backend_kit.testing.override_settings() in tests."
        )

    def __delattr__(self, name: str) -> None:
        raise TypeError(f"{type(self).__name__} is immutable: {name!r} cannot be deleted.")

    def source_of(self, *path: str) -> str:
        """Where the value of the field at *path* came from, for example
        ``"environment variable LOG_LEVEL"``, ``"file .env"`` or ``"default"``."""
        for length in range(len(path), 0, -1):
            source = self._sources.get(path[:length])
            if source is not None:
                return source
        return "default"


def qualified_name(cls: type) -> str:
    module = cls.__module__
    # Our own classes are known by their public name, not their private module.
    if module.startswith("backend_kit._"):
        module = "backend_kit"
    return f"{module}.{cls.__qualname__}"


def _config_error(
    cls: type[Settings],
    exc: ValidationError,
    resolved: dict[str, Any],
    sources: dict[tuple[str, ...], str],
    earlier: list[Any] | None = None,
) -> ConfigError:
    problems = [*(earlier or []), *problems_from_validation(cls, exc, resolved, sources)]
    return ConfigError(problems, settings_name=qualified_name(cls))


@overload
def load_settings(**overrides: Any) -> Settings: ...
@overload
def load_settings(cls: type[S], /, **overrides: Any) -> S: ...
def load_settings(cls: type[Settings] = Settings, /, **overrides: Any) -> Settings:
    """Build settings of class *cls* from every source, *overrides* strongest.

    Raises `ConfigError` listing every problem at once (the variable to set, what was
    expected, and where the bad value came from), never echoing a value.

    Examples:
        >>> settings = load_settings(service_name="billing")
        >>> settings.service_name
        'billing'
    """
    if not (isinstance(cls, type) and issubclass(cls, Settings)):
        raise TypeError(f"load_settings() expects a subclass of backend_kit.Settings, got {cls!r}")
    return cls(**overrides)


def replace_settings(settings: S, **values: Any) -> S:
    """A validated copy of *settings* with *values* changed; ``a__b`` sets a nested field.

    Sources are not read again.
    """
    cls = type(settings)
    merged: dict[str, Any] = {name: getattr(settings, name) for name in cls.model_fields}
    for key, value in values.items():
        path = key.lower().split("__") if "__" in key else [key]
        if path[0] not in cls.model_fields:
            raise TypeError(f"{qualified_name(cls)} has no field {path[0]!r}")
        target = merged
        for part in path[:-1]:
            current = target[part]
            if isinstance(current, BaseModel):
                current = dict(current)
            target[part] = current
            target = current
        target[path[-1]] = value
    token = _skip_sources.set(True)
    try:
        new = cls(**merged)
    finally:
        _skip_sources.reset(token)
    new._sources = {
        **settings._sources,
        **{tuple(k.lower().split("__")): "override" for k in values},
    }
    return new
