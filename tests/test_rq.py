"""backend_kit.rq with a real ``rq worker`` (burst mode) on the real Redis: the
enqueuer's request id in every line of the job, one task_finished per run, one Sentry
event per failure, no job arguments anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from backend_kit import request_context
from backend_kit.rq import ContextQueue
from tests.sentry_receiver import sentry_receiver

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CANARY = "canary-rq-5a0c1f-secret"


@pytest.fixture
def rq_redis_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + "/11"


def test_jobs_carry_the_enqueuing_request_and_report_once(
    rq_redis_url: str, tmp_path: Path
) -> None:
    from rq import Retry

    connection = redis.Redis.from_url(rq_redis_url, socket_timeout=10)
    queue = ContextQueue(f"bk-test-{uuid.uuid4().hex}", connection=connection)
    with request_context("req-rq-1"):
        ok = queue.enqueue("tests.rq_jobs.echo", CANARY, card=CANARY)
        failed = queue.enqueue("tests.rq_jobs.fail", CANARY)
        flaky = queue.enqueue("tests.rq_jobs.flaky", str(tmp_path / "marker"), retry=Retry(max=2))
    outside = queue.enqueue("tests.rq_jobs.echo")
    assert ok.meta["x-request-id"] == "req-rq-1"
    assert CANARY not in ok.description

    try:
        with sentry_receiver() as receiver:
            env = {
                **os.environ,
                "PYTHONPATH": str(PROJECT_ROOT),
                "LOG_FORMAT": "json",
                "SENTRY_DSN": receiver.dsn,
            }
            worker = subprocess.run(
                [
                    str(Path(sys.executable).parent / "rq"), "worker", "--burst",
                    "-w", "backend_kit.rq.ContextWorker", "-u", rq_redis_url, queue.name,
                ],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
    finally:
        queue.delete(delete_jobs=True)
        connection.close()
    output = worker.stdout + worker.stderr
    lines = [line for line in output.splitlines() if line]
    events: list[dict[str, Any]] = [orjson.loads(line) for line in lines]  # all JSON
    finished = sorted(
        (e["task_id"], e["state"], e["retries"]) for e in events if e["event"] == "task_finished"
    )
    assert finished == sorted(
        [
            (ok.id, "success", 0),
            (failed.id, "failure", 0),
            (flaky.id, "retry", 0),
            (flaky.id, "success", 1),
            (outside.id, "success", 0),
        ]
    ), output
    for event in events:
        if event.get("task_id") in (ok.id, failed.id, flaky.id):
            assert event["request_id"] == "req-rq-1", event
    (outside_finished,) = [
        e for e in events if e["event"] == "task_finished" and e["task_id"] == outside.id
    ]
    assert outside_finished["request_id"] != "req-rq-1"
    assert CANARY not in output

    kinds = [item.type for item in receiver.items]
    assert kinds.count("event") == 1, kinds
    assert set(kinds) <= {"event", "client_report"}, kinds
    (event,) = receiver.events
    assert event["tags"]["request_id"] == "req-rq-1"
    assert event["tags"]["task_id"] == failed.id
    assert event["tags"]["task_name"] == "tests.rq_jobs.fail"
    assert CANARY not in b"\n".join(receiver.raw_bodies).decode()
