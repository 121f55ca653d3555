"""The ASGI adapter, as a FastAPI or bare-ASGI user types it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from backend_kit import load_settings
from backend_kit.asgi import BackendKitMiddleware
from backend_kit.health import HealthRegistry, HealthRunner

app = FastAPI()
app.add_middleware(BackendKitMiddleware, settings=load_settings(), health=HealthRegistry())


async def bare(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})


wrapped = BackendKitMiddleware(bare)
runner: HealthRunner = wrapped.health_runner
registry: HealthRegistry = wrapped.health
