"""Django ``DATABASES`` and ``CACHES`` entries from the URLs in backend_kit's settings,
so a project reads its environment once, through `backend_kit.Settings`.

In ``settings.py``::

    import backend_kit
    from backend_kit.django import cache_from_url, database_from_url

    SERVICE = backend_kit.load_settings()
    DATABASES = {"default": database_from_url(SERVICE)}
    CACHES = {"default": cache_from_url(SERVICE)}
    LOGGING_CONFIG = None  # backend_kit configures logging
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import SecretStr

from .._errors import ConfigError, ConfigProblem
from .._redact import mask_url
from ._deadline import READ_TIMEOUT_KEY

if TYPE_CHECKING:
    from .._settings import Settings

__all__ = ["cache_from_url", "database_from_url"]

_DATABASE_ENGINES = {
    "postgres": "django.db.backends.postgresql",
    "postgresql": "django.db.backends.postgresql",
    "pgsql": "django.db.backends.postgresql",
    "sqlite": "django.db.backends.sqlite3",
    "sqlite3": "django.db.backends.sqlite3",
    "mysql": "django.db.backends.mysql",
    "mariadb": "django.db.backends.mysql",
}

#: Seconds to wait for a connection: a database that does not answer must not hang
#: a request (or a health probe) forever.
DEFAULT_CONNECT_TIMEOUT = 5
DEFAULT_SOCKET_TIMEOUT = 2.0
#: Used when neither *statement_timeout* nor settings give one (the default of the
#: ``DATABASE_STATEMENT_TIMEOUT`` setting).
DEFAULT_STATEMENT_TIMEOUT = 10.0
#: TCP keepalive probes on PostgreSQL connections: an idle connection to a peer that
#: vanished is found dead after at most 5 + 2 x 3 = 11 s.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 2, 3


def _variable(settings: Settings | None, field: str) -> str:
    """The environment variable of *field*, with the prefix of *settings*' class (or of
    the active settings), for messages that tell the user what to set."""
    if settings is None:
        from .._active import active_settings_or_none

        settings = active_settings_or_none()
    if settings is None:
        return field.upper()
    from .._sources import variable_name

    return variable_name(type(settings), (field,))


def _plain(url: str | SecretStr | None, variable: str) -> str:
    if url is None:
        raise ConfigError(
            [ConfigProblem(variable, "required by the Django settings, but not set", "no source")]
        )
    return url.get_secret_value() if isinstance(url, SecretStr) else url


def _problem(variable: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(variable, message, "Django settings")])


def _statement_timeout(explicit: float | None, settings: Settings | None) -> float:
    if explicit is not None:
        if not explicit > 0:
            raise ValueError("statement_timeout must be a positive number of seconds")
        return float(explicit)
    if settings is None:
        from .._active import active_settings_or_none

        settings = active_settings_or_none()
    if settings is not None:
        return float(settings.database_statement_timeout)
    return DEFAULT_STATEMENT_TIMEOUT


def database_from_url(
    url: str | SecretStr | Settings | None,
    *,
    settings: Settings | None = None,
    statement_timeout: float | None = None,
    conn_max_age: int | None = 60,
    conn_health_checks: bool = True,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
) -> dict[str, Any]:
    """A ``DATABASES`` entry for *url* (``DATABASE_URL``), with every wait bounded.

    Pass the settings object itself (``database_from_url(SERVICE)``) to take both the
    URL and ``DATABASE_STATEMENT_TIMEOUT`` from it, and to have errors name the
    variable with the settings class's prefix (``SHOP_DATABASE_URL``). A bare URL takes
    the timeout from *settings*, else the active settings, else 10 s; *statement_timeout*
    (seconds) overrides both.

    PostgreSQL (``postgres://user:password@host:5432/name?sslmode=require``) gets a
    server-side ``statement_timeout``, a TCP user timeout (how long sent data may stay
    unacknowledged) of the statement timeout plus the connect timeout, TCP keepalives,
    and a client-side read timeout of the statement timeout plus 1 s
    (``BACKEND_KIT_READ_TIMEOUT``, enforced when ``backend_kit.django`` is installed).
    MySQL/MariaDB get read and write timeouts of the statement timeout.
    SQLite (``sqlite:///relative.sqlite3``, ``sqlite:////absolute/path.sqlite3``,
    ``sqlite://:memory:``) waits for a lock no longer than the statement timeout.
    Query parameters become ``OPTIONS`` and win over these defaults. Persistent
    connections are checked before reuse; network connections time out.

    Raises `backend_kit.ConfigError` for a missing URL or an unknown scheme.
    """
    from .._settings import Settings

    if isinstance(url, Settings):
        settings, url = url, url.database_url
    variable = _variable(settings, "database_url")
    seconds = _statement_timeout(statement_timeout, settings)
    raw = _plain(url, variable)
    parts = urlsplit(raw)
    engine = _DATABASE_ENGINES.get(parts.scheme.lower())
    if engine is None:
        known = ", ".join(sorted({s for s in _DATABASE_ENGINES if s != "pgsql"}))
        raise _problem(
            variable,
            f"the scheme {parts.scheme!r} of {mask_url(raw)} is not supported; use one of {known}",
        )
    options: dict[str, Any] = dict(parse_qsl(parts.query))
    if engine.endswith("sqlite3"):
        name = parts.netloc + parts.path if parts.netloc == ":memory:" else parts.path[1:]
        options.setdefault("timeout", seconds)  # how long a write waits for a lock
        return {"ENGINE": engine, "NAME": unquote(name) or ":memory:", "OPTIONS": options}

    options.setdefault("connect_timeout", connect_timeout)
    if engine.endswith("postgresql"):
        # The server cancels a statement running longer than this, and the request
        # gets an error (QueryCanceled) instead of holding its worker.
        timeout_option = f"-c statement_timeout={max(1, round(seconds * 1000))}"
        existing = options.get("options", "")
        if "statement_timeout" not in existing:
            options["options"] = f"{existing} {timeout_option}".strip()
        options.setdefault(
            "tcp_user_timeout", round((seconds + float(options["connect_timeout"])) * 1000)
        )
        options.setdefault("keepalives", 1)
        options.setdefault("keepalives_idle", KEEPALIVE_IDLE)
        options.setdefault("keepalives_interval", KEEPALIVE_INTERVAL)
        options.setdefault("keepalives_count", KEEPALIVE_COUNT)
    else:  # MySQL and MariaDB (mysqlclient counts whole seconds)
        options.setdefault("read_timeout", max(1, math.ceil(seconds)))
        options.setdefault("write_timeout", max(1, math.ceil(seconds)))
    config: dict[str, Any] = {
        "ENGINE": engine,
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": unquote(parts.hostname or ""),
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
        "CONN_MAX_AGE": conn_max_age,
        "CONN_HEALTH_CHECKS": conn_health_checks,
    }
    if engine.endswith("postgresql"):
        # Bounds a server that stops answering (statement_timeout needs one that answers);
        # enforced by backend_kit.django's app on every statement and health check.
        config[READ_TIMEOUT_KEY] = seconds + 1.0
    return config


def cache_from_url(
    url: str | SecretStr | Settings,
    *,
    settings: Settings | None = None,
    key_prefix: str = "",
    timeout: float | None = 300,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
) -> dict[str, Any]:
    """A ``CACHES`` entry for *url* (``CACHE_URL``): Django's local-memory cache for
    ``memory://`` (optionally ``memory://name``), Django's own Redis cache for
    ``redis://`` and ``rediss://``, with connect and socket timeouts set.

    Like `database_from_url`, it accepts the settings object itself, and names the
    prefixed variable in its errors.

    Raises `backend_kit.ConfigError` for an unknown scheme.
    """
    from .._settings import Settings

    if isinstance(url, Settings):
        settings, url = url, url.cache_url
    variable = _variable(settings, "cache_url")
    raw = _plain(url, variable)
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    common: dict[str, Any] = {"KEY_PREFIX": key_prefix, "TIMEOUT": timeout}
    if scheme == "memory":
        return {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": parts.netloc or "default",
            **common,
        }
    if scheme in {"redis", "rediss", "unix"}:
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": raw,
            "OPTIONS": {
                "socket_connect_timeout": socket_timeout,
                "socket_timeout": socket_timeout,
            },
            **common,
        }
    if scheme.endswith(("+sentinel", "+cluster")):
        raise _problem(
            "CACHE_URL",
            f"Django's built-in Redis cache connects to single servers, not to "
            f"{mask_url(raw)}; give CACHES a single-server URL (redis://, rediss:// or "
            "unix://), and keep this URL for backend_kit's own cache (cached, "
            "default_cache), which understands Sentinel and Cluster",
        )
    raise _problem(
        variable,
        f"the scheme {parts.scheme!r} of {mask_url(raw)} is not supported; "
        "use memory:// or redis://host:port/db",
    )
