"""Helpers for testing code that uses backend_kit. Public API.

>>> from backend_kit.testing import override_settings
>>> with override_settings(service_name="billing") as settings:
...     settings.service_name
'billing'
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._settings import Settings, get_settings, replace_settings, set_active_settings

__all__ = ["memory_cache", "override_settings", "retries"]


@contextmanager
def override_settings(**values: Any) -> Iterator[Settings]:
    """Make a validated copy of the active settings with *values* changed the active
    settings for the duration of the block, then restore the previous ones.

    Nested fields are reached with ``__``: ``override_settings(db__port=6543)``.
    Raises `backend_kit.ConfigError` when a value is invalid.
    """
    current = get_settings()
    changed = replace_settings(current, **values)
    previous = set_active_settings(changed)
    try:
        yield changed
    finally:
        set_active_settings(previous)


@contextmanager
def retries(attempts: int = 1) -> Iterator[None]:
    """Inside the block, retries never sleep and make at most *attempts* attempts, so a
    test suite exercising retried code runs at full speed.

    >>> import backend_kit
    >>> from backend_kit.testing import retries
    >>> calls = []
    >>> @backend_kit.retry(on=ConnectionError)
    ... def flaky() -> None:
    ...     calls.append(1)
    ...     raise ConnectionError("down")
    >>> with retries(attempts=2):
    ...     flaky()
    Traceback (most recent call last):
    ConnectionError: down
    >>> len(calls)
    2

    Under pytest, the ``backend_kit_retries`` fixture does the same for one test.
    Raises `ValueError` when *attempts* is less than 1.
    """
    from ._retry import override_retries

    with override_retries(attempts):
        yield


@contextmanager
def memory_cache() -> Iterator[None]:
    """Make every `backend_kit.cached` function (without an explicit ``cache=``) and
    `backend_kit.default_cache` use fresh, empty in-memory caches for the block,
    whatever ``CACHE_URL`` says. Nothing cached inside the block is seen after it: the
    in-memory caches start empty again, and a Redis cache is used again if configured.

    >>> from backend_kit import cached
    >>> from backend_kit.testing import memory_cache
    >>> @cached(ttl=60)
    ... def answer() -> int:
    ...     return 42
    >>> with memory_cache():
    ...     answer(), answer.cache_info().loads
    (42, 1)
    """
    from ._cache import use_memory_only

    use_memory_only(True)
    try:
        yield
    finally:
        use_memory_only(False)
