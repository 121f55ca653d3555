"""The retry API as a user writes it; checked with ``mypy --strict`` (see test_retry_typing)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

import backend_kit
from backend_kit.testing import retries


@backend_kit.retry(on=ConnectionError)
def fetch(url: str, *, timeout: float = 1.0) -> bytes:
    return url.encode()


@backend_kit.retry(on=(ConnectionError, TimeoutError), attempts=3, timeout=5.0)
async def fetch_async(url: str) -> int:
    return len(url)


def retry_after(exc: Exception) -> bool | float:
    return 1.5 if isinstance(exc, ConnectionError) else False


policy = backend_kit.RetryPolicy(on=retry_after, attempts=5)


@policy
def ping() -> None:
    pass


class Client:
    @backend_kit.retry(on=OSError)
    def get(self, path: str) -> str:
        return path


assert_type(fetch("u"), bytes)
assert_type(fetch("u", timeout=2.0), bytes)


async def use_async() -> None:
    assert_type(await fetch_async("u"), int)
    coroutine: Coroutine[Any, Any, int] = fetch_async("u")
    await coroutine


assert_type(asyncio.run(fetch_async("u")), int)
assert_type(ping(), None)
assert_type(Client().get("/"), str)
assert_type(policy, backend_kit.RetryPolicy)

for attempt in backend_kit.retry_context(on=OSError):
    with attempt:
        assert_type(attempt.number, int)


async def block() -> None:
    async for attempt in policy.context():
        with attempt:
            assert_type(attempt, backend_kit.Attempt)


with retries(attempts=2):
    pass

fetch(1)  # type: ignore[arg-type]
fetch("u", retries=3)  # type: ignore[call-arg]
ping(1)  # type: ignore[call-arg]
Client().get(1)  # type: ignore[arg-type]
backend_kit.retry(ConnectionError)  # type: ignore[call-arg]  # on is keyword-only


async def wrong_argument() -> None:
    await backend_kit.retry(on=ConnectionError)(fetch_async)(b"u")  # type: ignore[arg-type]
