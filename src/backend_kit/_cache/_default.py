"""Which backend a `cached` function uses: the one named by ``CACHE_URL``."""

from __future__ import annotations

import threading
from contextlib import suppress

from backend_kit._active import get_settings
from backend_kit._forksafe import after_fork_in_child
from backend_kit._settings import Settings

from ._backend import CacheBackend
from ._memory import MemoryCache

__all__ = ["default_cache"]

_lock = threading.Lock()
_redis_caches: dict[tuple[object, ...], CacheBackend] = {}
_shared_memory: MemoryCache | None = None


class _Switch:
    """Set by `backend_kit.testing.memory_cache`; each change bumps the generation, so
    cached functions pick a new backend on their next call."""

    generation = 0
    memory_only = False


switch = _Switch()


def current_settings() -> Settings:
    """The active settings, loading them from the environment when there are none."""
    return get_settings()


def default_cache(settings: Settings | None = None) -> CacheBackend:
    """The cache backend named by ``CACHE_URL`` in *settings* (default: the active
    settings): a process-wide `MemoryCache` for ``memory://``, or a `RedisCache` with a
    pooled client for a Redis URL (one server, Sentinel or Cluster; TLS options from
    the ``REDIS_SSL_*`` settings), shared by every caller with the same
    settings. Inside `backend_kit.testing.memory_cache()`, the block's memory cache.

    Raises `ImportError` with an install hint when Redis is configured but redis-py is
    missing.

    Examples:
        >>> from backend_kit import default_cache
        >>> default_cache().get_or_set("greeting", lambda: "hello", ttl=60)
        'hello'
    """
    global _shared_memory
    settings = settings if settings is not None else current_settings()
    if switch.memory_only or settings.cache_url.scheme == "memory":
        with _lock:
            if _shared_memory is None:
                _shared_memory = MemoryCache()
            return _shared_memory
    url = settings.cache_url.get_secret_value()
    prefix = settings.cache_key_prefix or f"{settings.service_name}:"
    secret = settings.cache_signing_key
    signing_key = secret.get_secret_value() if secret is not None else None
    fallbacks = tuple(key.get_secret_value() for key in settings.cache_signing_key_fallbacks)
    from backend_kit._redis_clients import tls_options_from_settings

    tls = tls_options_from_settings(settings)
    config = (
        url,
        prefix,
        settings.cache_serializer,
        signing_key,
        fallbacks,
        settings.cache_timeout,
        tuple(sorted(tls.items())),
    )
    with _lock:
        cache = _redis_caches.get(config)
        if cache is None:
            from ._redis import RedisCache

            cache = _redis_caches[config] = RedisCache(
                url,
                prefix=prefix,
                serializer=settings.cache_serializer,
                signing_key=signing_key,
                signing_key_fallbacks=fallbacks,
                timeout=settings.cache_timeout,
                tls_options=tls,
                variable_prefix=_variable_prefix(settings),
            )
        return cache


def use_memory_only(enabled: bool) -> None:
    """Switch every default backend to fresh in-memory caches (or back)."""
    global _shared_memory
    with _lock:
        switch.memory_only = enabled
        switch.generation += 1
        _shared_memory = None


def forget_default_caches() -> None:
    """Forget the shared memory cache and every Redis cache made from settings (their
    clients are closed), and leave `use_memory_only` mode."""
    global _shared_memory
    with _lock:
        redis_caches = list(_redis_caches.values())
        _redis_caches.clear()
        _shared_memory = None
        switch.memory_only = False
        switch.generation += 1
    for cache in redis_caches:
        close = getattr(cache, "close", None)
        if close is not None:
            with suppress(Exception):  # a server gone away has nothing left to close
                close()


@after_fork_in_child
def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


def _variable_prefix(settings: Settings) -> str:
    """The environment prefix of *settings*' class (``SHOP_``), for messages."""
    from backend_kit._sources import variable_name

    return variable_name(type(settings), ("cache_url",)).removesuffix("CACHE_URL")
