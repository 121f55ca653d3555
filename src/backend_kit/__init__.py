"""backend_kit: production best practice for Django and Flask services.

One settings object, one request context and one redaction policy, shared by
structured logging, Sentry, retries, caching and health checks.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._breaker import CircuitBreaker, CircuitOpenError, circuit_breaker
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
from ._configure import configure
from ._context import (
    bind_context,
    current_context,
    current_request_id,
    current_trace,
    request_context,
)
from ._errors import ConfigError, ConfigProblem
from ._logging import configure_logging, get_logger
from ._redact import Redactor, get_redactor
from ._retry import Attempt, RetryingBlock, RetryPolicy, retry, retry_context
from ._sentry import SentryDrops, configure_sentry, dropped_sentry_events
from ._settings import SecretURL, Settings, get_settings, load_settings

try:
    __version__ = version("backend-kit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0"

__all__ = [
    "Attempt",
    "CacheBackend",
    "CacheInfo",
    "CachedFunction",
    "CircuitBreaker",
    "CircuitOpenError",
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
    "circuit_breaker",
    "configure",
    "configure_logging",
    "configure_sentry",
    "current_context",
    "current_request_id",
    "current_trace",
    "default_cache",
    "dropped_sentry_events",
    "get_logger",
    "get_redactor",
    "get_settings",
    "load_settings",
    "request_context",
    "retry",
    "retry_context",
]
