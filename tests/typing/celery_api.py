"""The Celery and context APIs as a user writes them; type-checked with ``mypy --strict``,
not run."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery import Celery

from backend_kit.celery import init_celery, worker_health
from backend_kit.context import (
    extract_context,
    inject_context,
    run_with_context,
    start_thread,
    submit_with_context,
    with_current_context,
)
from backend_kit.health import HealthRegistry, HealthRunner


def wiring() -> None:
    app: Celery = init_celery(Celery("proj"))
    runner: HealthRunner = worker_health(HealthRegistry())
    del app, runner


def double(value: int) -> int:
    return value * 2


def threads() -> None:
    doubled: int = run_with_context(double, 21)
    bound = with_current_context(double)
    again: int = bound(2)
    with ThreadPoolExecutor(1) as pool:
        future: Future[int] = submit_with_context(pool, double, 3)
    start_thread(double, 4, name="worker").join(timeout=5)
    headers: dict[str, Any] = {}
    inject_context(headers)
    values: dict[str, Any] = extract_context(headers)
    del doubled, again, future, values
