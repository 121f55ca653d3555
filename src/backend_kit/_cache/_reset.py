"""Everything the cache keeps between calls, forgotten at once (for tests)."""

from __future__ import annotations

from ._decorator import forget_cached_functions
from ._default import forget_default_caches
from ._memory import forget_namespace_versions

__all__ = ["reset_caches"]


def reset_caches() -> None:
    """Forget the default caches (memory and Redis, whose circuit breakers go with
    them), each cached function's backend, memory cache and counters, and the namespace
    versions of the memory caches. Data stored in Redis is left alone."""
    forget_default_caches()
    forget_cached_functions()
    forget_namespace_versions()
