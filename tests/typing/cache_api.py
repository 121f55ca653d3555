"""The caching API as a user writes it; type-checked with ``mypy --strict``, not run."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from backend_kit import CacheBackend, CacheInfo, MemoryCache, cached, default_cache


@cached(ttl=60)
def square(n: int, *, scale: float = 1.0) -> float:
    return n * n * scale


@cached(ttl=60, namespace="users", stale_ttl=30)
async def fetch_user(user_id: int) -> dict[str, int]:
    return {"id": user_id}


async def use() -> None:
    area: float = square(3, scale=2.0)
    user: dict[str, int] = await fetch_user(1)
    square.invalidate(3, scale=2.0)
    fetch_user.invalidate(1)
    square.cache_clear()
    fetch_user.invalidate_namespace()
    info: CacheInfo = square.cache_info()
    fallbacks: int = info.fallbacks
    backend: CacheBackend = default_cache()
    answer: int = MemoryCache(maxsize=10).get_or_set("answer", lambda: 42, ttl=60)
    backend.set("key", {"a": 1}, ttl=30)
    backend.check()
    del area, user, info, answer, fallbacks


# The decorated functions keep their signatures: results, arguments, and the arguments
# of invalidate(), which names one entry as a call would.
assert_type(square(3), float)


async def results() -> None:
    assert_type(await fetch_user(1), dict[str, int])
    coroutine: Coroutine[Any, Any, dict[str, int]] = fetch_user(1)
    await coroutine


square("3")  # type: ignore[arg-type]
square(3, scal=2.0)  # type: ignore[call-arg]
square.invalidate(3, 2.0)  # type: ignore[call-arg]  # scale is keyword-only
fetch_user.invalidate("1")  # type: ignore[arg-type]
cached(60)  # type: ignore[call-arg]  # ttl is keyword-only
