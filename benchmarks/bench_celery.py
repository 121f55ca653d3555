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
import random
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import suppress
from importlib.metadata import version
from pathlib import Path

from _report import Results, add_json_option
from celery import Celery

HERE = Path(__file__).resolve().parent
TARGET = 1.05  # the wired worker's per-task cost at most 5 % above the logging-only one's
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


def cpu_ns(pid: int) -> int:
    """CPU time every thread of process *pid* has used so far, in nanoseconds (Linux's
    scheduler statistics: precise, and unaffected by time spent waiting for a CPU)."""
    total = 0
    for thread in Path(f"/proc/{pid}/task").iterdir():
        with suppress(OSError):
            total += int((thread / "schedstat").read_text().split()[0])
    return total


def run_batch(app: Celery, worker_pid: int, tasks: int, wired: bool) -> float:
    """CPU nanoseconds per task for one batch: the worker's, plus the publisher's."""
    from backend_kit.celery import init_celery, reset_celery

    if wired:
        init_celery(app)
    else:
        reset_celery()
    token = uuid.uuid4().hex
    worker_before = cpu_ns(worker_pid)
    publisher_before = time.thread_time_ns()
    for _ in range(tasks):
        app.send_task("bench.noop", ignore_result=True)
    result = app.send_task("bench.mark", args=(token,))
    publisher = time.thread_time_ns() - publisher_before
    if result.get(timeout=120) != token:
        raise SystemExit("the marker task came back wrong")
    worker = cpu_ns(worker_pid) - worker_before
    result.forget()
    return (worker + publisher) / (tasks + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks per batch")
    parser.add_argument("--rounds", type=int, default=15, help="batches per worker")
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
            run_batch(apps[mode], workers[mode].pid, 50, mode == "wired")
        order = list(MODES)
        for _ in range(args.rounds):
            random.shuffle(order)  # no mode always runs right after another
            for mode in order:
                cost = run_batch(apps[mode], workers[mode].pid, args.tasks, mode == "wired")
                times[mode].append(cost)
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
    # Batches of the same round ran seconds apart, under the same load from whatever
    # else the machine is doing: their ratio cancels most of it.
    pairs = zip(times["wired"], times["logging-only"], strict=True)
    paired = statistics.median(wired / bare for wired, bare in pairs)
    print(f"\nNo-op task on a solo worker, Redis broker, {args.rounds} x {args.tasks} tasks")
    for mode in MODES:
        print(
            f"  {mode:<14} {median[mode] / 1e3:8.1f} us CPU/task (median)"
            f"   {best[mode] / 1e3:8.1f} us CPU/task (best batch)"
        )
        results.absolute(mode, median[mode] / 1e3, "us CPU/task", better="lower")
    verdict = "met" if paired <= TARGET else "MISSED"
    print(
        f"  wired / logging-only, median of per-round ratios = {paired:.3f} "
        f"(target <= {TARGET}): {verdict}"
    )
    print(f"  wired / logging-only, best batches = {best['wired'] / best['logging-only']:.3f}")
    print(f"  wired / plain, medians = {median['wired'] / median['plain']:.3f} (information)")
    results.ratio("wired / logging-only", paired, target=TARGET, better="lower")
    results.ratio("wired / plain", median["wired"] / median["plain"], better="lower")
    ratio = paired
    results.write(args.json)
    if ratio > TARGET:
        sys.exit(1)


if __name__ == "__main__":
    main()
