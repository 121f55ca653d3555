"""Django ``DATABASES`` and ``CACHES`` entries from the URLs in backend_kit's settings,
so a project reads its environment once, through `backend_kit.Settings`.

In ``settings.py``::

    import backend_kit
    from backend_kit.django import cache_from_url, database_from_url

    SERVICE = backend_kit.load_settings()
    DATABASES = {"default": database_from_url(SERVICE.database_url)}
    CACHES = {"default": cache_from_url(SERVICE.cache_url)}
    LOGGING_CONFIG = None  # backend_kit configures logging
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import SecretStr

from .._errors import ConfigError, ConfigProblem
from .._redact import mask_url

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


def _plain(url: str | SecretStr | None, variable: str) -> str:
    if url is None:
        raise ConfigError(
            [ConfigProblem(variable, "required by the Django settings, but not set", "no source")]
        )
    return url.get_secret_value() if isinstance(url, SecretStr) else url


def _problem(variable: str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(variable, message, "Django settings")])


def database_from_url(
    url: str | SecretStr | None,
    *,
    conn_max_age: int | None = 60,
    conn_health_checks: bool = True,
    connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
) -> dict[str, Any]:
    """A ``DATABASES`` entry for *url* (``DATABASE_URL``).

    PostgreSQL (``postgres://user:password@host:5432/name?sslmode=require``), SQLite
    (``sqlite:///relative.sqlite3``, ``sqlite:////absolute/path.sqlite3``,
    ``sqlite://:memory:``) and MySQL/MariaDB. Query parameters become ``OPTIONS``.
    Persistent connections are checked before reuse; network connections time out.

    Raises `backend_kit.ConfigError` for a missing URL or an unknown scheme.
    """
    raw = _plain(url, "DATABASE_URL")
    parts = urlsplit(raw)
    engine = _DATABASE_ENGINES.get(parts.scheme.lower())
    if engine is None:
        known = ", ".join(sorted({s for s in _DATABASE_ENGINES if s != "pgsql"}))
        raise _problem(
            "DATABASE_URL",
            f"the scheme {parts.scheme!r} of {mask_url(raw)} is not supported; use one of {known}",
        )
    if engine.endswith("sqlite3"):
        name = parts.netloc + parts.path if parts.netloc == ":memory:" else parts.path[1:]
        return {"ENGINE": engine, "NAME": unquote(name) or ":memory:"}

    options: dict[str, Any] = dict(parse_qsl(parts.query))
    options.setdefault("connect_timeout", connect_timeout)
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
    return config


def cache_from_url(
    url: str | SecretStr,
    *,
    key_prefix: str = "",
    timeout: float | None = 300,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
) -> dict[str, Any]:
    """A ``CACHES`` entry for *url* (``CACHE_URL``): Django's local-memory cache for
    ``memory://`` (optionally ``memory://name``), Django's own Redis cache for
    ``redis://`` and ``rediss://``, with connect and socket timeouts set.

    Raises `backend_kit.ConfigError` for an unknown scheme.
    """
    raw = _plain(url, "CACHE_URL")
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
        "CACHE_URL",
        f"the scheme {parts.scheme!r} of {mask_url(raw)} is not supported; "
        "use memory:// or redis://host:port/db",
    )
