"""The Celery app of ``bench_celery.py``: the same tasks in three set-ups.

``BK_BENCH_MODE`` is ``wired`` (`backend_kit.celery.init_celery`), ``logging-only``
(wired, then the task and publish signal receivers disconnected: backend_kit's logging
pipeline without the per-task work) or ``plain`` (Celery's own logging). The broker and
result backend come from ``BK_BENCH_BROKER``, the queue from ``BK_BENCH_QUEUE``.
"""

from __future__ import annotations

import os

from celery import Celery, signals

app = Celery("bench", broker=os.environ["BK_BENCH_BROKER"], backend=os.environ["BK_BENCH_BROKER"])
app.conf.task_default_queue = os.environ["BK_BENCH_QUEUE"]
app.conf.worker_prefetch_multiplier = 4

MODE = os.environ.get("BK_BENCH_MODE", "plain")
if MODE in ("wired", "logging-only"):
    from backend_kit.celery import SIGNAL_UID, init_celery

    init_celery(app)
    if MODE == "logging-only":
        for signal in (
            signals.before_task_publish,
            signals.task_prerun,
            signals.task_postrun,
            signals.task_revoked,
        ):
            signal.disconnect(dispatch_uid=SIGNAL_UID)


@app.task(name="bench.noop", ignore_result=True)
def noop() -> None:
    return None


@app.task(name="bench.mark")
def mark(token: str) -> str:
    return token
