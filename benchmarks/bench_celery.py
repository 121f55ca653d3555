"""Per-task overhead of backend_kit's Celery signals on a real worker.

Three ``celery worker`` processes (solo pool, the real Redis as broker) run the same
no-op task:

- ``wired``: `backend_kit.celery.init_celery` (task context from the headers,
  ``task_finished``, Celery's lines through backend_kit's JSON pipeline);
- ``logging-only``: the same worker with backend_kit's task and publish signal
  receivers disconnected, so its logs still go through backend_kit's pipeline;
- ``plain``: Celery as it comes, its own log format (for information).

Batches of tasks go to each in turn, published with backend_kit's publish hook on for
the wired worker only; a batch is timed from its first publish until a final marker
task's result arrives. Goal: the wired worker's median per-task time at most 5 % above
the logging-only one's (the signals' overhead).

Run: ``python benchmarks/bench_celery.py`` (``--tasks`` and ``--rounds`` to tune,
``--json PATH`` to also write the figures). Needs Redis at ``REDIS_URL`` (default
``redis://127.0.0.1:6379/0``); database 11 is used, with queues of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from importlib.metadata import version
from pathlib import Path

from _report import Results, add_json_option
from celery import Celery

HERE = Path(__file__).resolve().parent
TARGET = 1.05  # the wired worker's per-task time at most 5 % above the plain one's
results = Results("bench_celery")


def broker_url() -> str:
    base = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    return base.rsplit("/", 1)[0] + "/11"


MODES = ("plain", "logging-only", "wired")


def start_worker(broker: str, queue: str, mode: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BK_BENCH_BROKER": broker,
        "BK_BENCH_QUEUE": queue,
        "BK_BENCH_MODE": mode,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "PYTHONPATH": str(HERE / "apps"),
    }
    return subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "celery_app", "--quiet", "worker",
            "-P", "solo", "-l", "INFO", "--without-gossip", "--without-mingle",
            "-n", f"{queue}@%h",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def publisher(broker: str, queue: str) -> Celery:
    app = Celery("bench-publisher", broker=broker, backend=broker)
    app.conf.task_default_queue = queue
    return app


def run_batch(app: Celery, tasks: int, wired: bool) -> float:
    """Seconds per task for one batch, publish to last result."""
    from backend_kit.celery import init_celery, reset_celery

    if wired:
        init_celery(app)
    else:
        reset_celery()
    token = uuid.uuid4().hex
    started = time.perf_counter()
    for _ in range(tasks):
        app.send_task("bench.noop", ignore_result=True)
    result = app.send_task("bench.mark", args=(token,))
    if result.get(timeout=120) != token:
        raise SystemExit("the marker task came back wrong")
    elapsed = time.perf_counter() - started
    result.forget()
    return elapsed / (tasks + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300, help="tasks per batch")
    parser.add_argument("--rounds", type=int, default=9, help="batches per worker")
    add_json_option(parser)
    args = parser.parse_args()
    print(f"backend_kit {version('backend-kit')}, celery {version('celery')}")

    broker = broker_url()
    queues = {mode: f"bk-bench-{uuid.uuid4().hex}" for mode in MODES}
    workers = {mode: start_worker(broker, queues[mode], mode) for mode in MODES}
    apps = {mode: publisher(broker, queues[mode]) for mode in MODES}
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for mode in MODES:  # warm up: the worker is consuming, tracers are built
            run_batch(apps[mode], 50, mode == "wired")
        for _ in range(args.rounds):
            for mode in MODES:
                times[mode].append(run_batch(apps[mode], args.tasks, mode == "wired"))
    finally:
        for worker in workers.values():
            worker.terminate()
        for worker in workers.values():
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        for app in apps.values():
            app.close()
        import redis

        with redis.Redis.from_url(broker, socket_timeout=5) as client:
            for queue in queues.values():  # kombu's bindings; the queues are empty
                client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")

    median = {mode: statistics.median(times[mode]) for mode in MODES}
    best = {mode: min(times[mode]) for mode in MODES}
    ratio = median["wired"] / median["logging-only"]
    print(f"\nNo-op task on a solo worker, Redis broker, {args.rounds} x {args.tasks} tasks")
    for mode in MODES:
        print(
            f"  {mode:<14} {median[mode] * 1e6:8.1f} us/task (median)"
            f"   {best[mode] * 1e6:8.1f} us/task (best batch)"
        )
        results.absolute(mode, median[mode] * 1e6, "us/task", better="lower")
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"  ratio wired / logging-only = {ratio:.3f} (target <= {TARGET}): {verdict}")
    print(
        f"  ratio wired / logging-only, best batches = "
        f"{best['wired'] / best['logging-only']:.3f} (information)"
    )
    print(f"  ratio wired / plain        = {median['wired'] / median['plain']:.3f} (information)")
    results.ratio("wired / logging-only", ratio, target=TARGET, better="lower")
    results.ratio("wired / plain", median["wired"] / median["plain"], better="lower")
    results.write(args.json)
    if ratio > TARGET:
        sys.exit(1)


if __name__ == "__main__":
    main()
