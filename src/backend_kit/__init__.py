"""backend_kit: production best practice for Django and Flask services.

One settings object, one request context and one redaction policy, shared by
structured logging, Sentry, retries, caching and health checks.

The names below are imported on first use (PEP 562), so importing the package, or one
of its modules such as the pytest plugin, costs nothing until a name is needed;
``from backend_kit import configure`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._active import get_redactor, get_settings, is_configured
    from ._cache import (
        CacheBackend,
        CachedFunction,
        CacheInfo,
        MemoryCache,
        RedisCache,
        ReentrantCacheCallError,
        UnencodableArgumentError,
        cached,
        default_cache,
    )
    from ._configure import configure, reset
    from ._context import bind_context, current_context, current_request_id, request_context
    from ._errors import ConfigError, ConfigProblem
    from ._logging import configure_logging, get_logger
    from ._redact import Redactor
    from ._retry import Attempt, RetryingBlock, RetryPolicy, retry, retry_context
    from ._secrets import SecretURL
    from ._sentry import SentryDrops, configure_sentry, dropped_sentry_events
    from ._settings import Settings, load_settings

    __version__: str

__all__ = [
    "Attempt",
    "CacheBackend",
    "CacheInfo",
    "CachedFunction",
    "ConfigError",
    "ConfigProblem",
    "MemoryCache",
    "Redactor",
    "RedisCache",
    "ReentrantCacheCallError",
    "RetryPolicy",
    "RetryingBlock",
    "SecretURL",
    "SentryDrops",
    "Settings",
    "UnencodableArgumentError",
    "__version__",
    "bind_context",
    "cached",
    "configure",
    "configure_logging",
    "configure_sentry",
    "current_context",
    "current_request_id",
    "default_cache",
    "dropped_sentry_events",
    "get_logger",
    "get_redactor",
    "get_settings",
    "is_configured",
    "load_settings",
    "request_context",
    "reset",
    "retry",
    "retry_context",
]

# Where each public name lives.
_MODULE_OF = {
    "get_redactor": "_active",
    "get_settings": "_active",
    "is_configured": "_active",
    "CacheBackend": "_cache",
    "CachedFunction": "_cache",
    "CacheInfo": "_cache",
    "MemoryCache": "_cache",
    "RedisCache": "_cache",
    "ReentrantCacheCallError": "_cache",
    "UnencodableArgumentError": "_cache",
    "cached": "_cache",
    "default_cache": "_cache",
    "configure": "_configure",
    "reset": "_configure",
    "bind_context": "_context",
    "current_context": "_context",
    "current_request_id": "_context",
    "request_context": "_context",
    "ConfigError": "_errors",
    "ConfigProblem": "_errors",
    "configure_logging": "_logging",
    "get_logger": "_logging",
    "Redactor": "_redact",
    "Attempt": "_retry",
    "RetryingBlock": "_retry",
    "RetryPolicy": "_retry",
    "retry": "_retry",
    "retry_context": "_retry",
    "SecretURL": "_secrets",
    "configure_sentry": "_sentry",
    "SentryDrops": "_sentry",
    "dropped_sentry_events": "_sentry",
    "Settings": "_settings",
    "load_settings": "_settings",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    elif name == "__version__":
        value = _version()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("backend-kit")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "0.0.0"
