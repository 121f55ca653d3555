"""Caching: the `cached` decorator and the memory and Redis backends behind it.

redis-py is imported only when a Redis backend is created.
"""

from __future__ import annotations

from ._backend import DEFAULT_NAMESPACE, CacheBackend
from ._decorator import CachedFunction, CacheInfo, cached
from ._default import default_cache, use_memory_only
from ._flight import ReentrantCacheCallError
from ._keys import UnencodableArgumentError
from ._memory import MemoryCache
from ._redis import RedisCache

__all__ = [
    "DEFAULT_NAMESPACE",
    "CacheBackend",
    "CacheInfo",
    "CachedFunction",
    "MemoryCache",
    "RedisCache",
    "ReentrantCacheCallError",
    "UnencodableArgumentError",
    "cached",
    "default_cache",
    "use_memory_only",
]
