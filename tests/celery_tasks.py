"""The Celery app the worker tests run in a subprocess (``celery -A tests.celery_tasks``).

The broker comes from ``CELERY_BROKER_URL`` through backend_kit's settings, the queue
from ``BK_TEST_QUEUE``, so parallel runs never consume each other's tasks.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import backend_kit
from backend_kit.celery import init_celery

app = init_celery(Celery("tests.celery_tasks"))
app.conf.task_default_queue = os.environ.get("BK_TEST_QUEUE", "backend_kit-tests")
app.conf.broker_connection_retry_on_startup = True
app.conf.worker_prefetch_multiplier = 1

if os.environ.get("BK_TEST_BEAT"):
    # For `celery beat`: a no-op every half second, published outside any request.
    app.conf.beat_schedule = {"noop": {"task": "tests.noop", "schedule": 0.5}}

log = backend_kit.get_logger("tests.celery_tasks")

#: Set by the Flask and Django test views: the Celery app they publish with.
publisher: Celery | None = None


@app.task(name="tests.echo")
def echo(*args: Any, **kwargs: Any) -> str:
    log.info("echo_ran", arg_count=len(args) + len(kwargs))
    return "ok"


@app.task(name="tests.noop")
def noop() -> None:
    return None


@app.task(name="tests.fail")
def fail(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("the payment provider said no")


@app.task(name="tests.flaky", bind=True, autoretry_for=(ConnectionError,), max_retries=2,
          default_retry_delay=0)  # fmt: skip
def flaky(self: Any, failures: int) -> str:
    log.info("flaky_attempt", attempt=self.request.retries)
    if self.request.retries < failures:
        raise ConnectionError("broker of the payment provider unreachable")
    return "ok"


_calls = {"count": 0}


@app.task(name="tests.inner_retry")
def inner_retry() -> str:
    @backend_kit.retry(on=ConnectionError, attempts=3, wait_initial=0.01, wait_jitter=0)
    def call() -> str:
        _calls["count"] += 1
        if _calls["count"] < 2:
            raise ConnectionError("first call fails")
        return "ok"

    return call()
