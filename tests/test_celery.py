"""backend_kit.celery against a real worker in a subprocess, on the real Redis and
RabbitMQ: request ids into tasks, one task_finished per run, one Sentry event per
failure, no task arguments anywhere, and the worker's health probes through the CLI.

Each worker consumes a queue of its own (a uuid), on Redis database 11, so parallel
runs never take each other's tasks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import orjson
import pytest
from celery import Celery

from backend_kit import bind_context, current_context, load_settings, request_context
from backend_kit.celery import ARGS_PLACEHOLDER, init_celery, reset_celery
from backend_kit.context import (
    extract_context,
    inject_context,
    run_with_context,
    start_thread,
    submit_with_context,
    with_current_context,
)
from tests import celery_tasks
from tests.sentry_receiver import sentry_receiver
from tests.servers import redis_server

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
CANARY = "canary-7d1e5b0c-secret"
WAIT = 30.0  # every wait below is bounded by this many seconds


@pytest.fixture
def celery_redis_url(redis_url: str) -> str:
    """The shared Redis, on a database of its own."""
    return redis_url.rsplit("/", 1)[0] + "/11"


@pytest.fixture
def rabbitmq_url() -> str:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(RABBITMQ_URL)
    try:
        socket.create_connection((parts.hostname, parts.port or 5672), timeout=2).close()
    except OSError:
        pytest.skip(f"RabbitMQ is not reachable at {parts.hostname}:{parts.port}")
    return RABBITMQ_URL


class Worker:
    """``celery worker`` for tests.celery_tasks in a subprocess, its stdout collected."""

    def __init__(
        self,
        broker_url: str,
        env: dict[str, str],
        *,
        command: tuple[str, ...] = ("worker", "-P", "solo"),
        queue: str | None = None,
        tmp: Path | None = None,
    ) -> None:
        self.queue = queue or f"bk-test-{uuid.uuid4().hex}"
        self.lines: list[str] = []
        self.stderr = ""
        self._condition = threading.Condition()
        environment = {
            **os.environ,
            "CELERY_BROKER_URL": broker_url,
            "BK_TEST_QUEUE": self.queue,
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(PROJECT_ROOT),
            **env,
        }
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "tests.celery_tasks", "--quiet",
                *command,
                *(
                    ("--without-gossip", "--without-mingle", "-n", f"{self.queue}@%h")
                    if command[0] == "worker"
                    else ("--schedule", str((tmp or Path(".")) / "beat-schedule"))
                ),
            ],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._errors = threading.Thread(target=self._read_stderr, daemon=True)
        self._errors.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._condition:
                self.lines.append(line.rstrip("\n"))
                self._condition.notify_all()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self.stderr = self.process.stderr.read()

    def events(self) -> list[dict[str, Any]]:
        """Every stdout line, parsed: each one must be a JSON object, except the notice
        Celery's signal handler prints (not logs) when the worker is told to stop."""
        with self._condition:
            lines = list(self.lines)
        if lines[-2:] == ["", "worker: Warm shutdown (MainProcess)"]:  # only a worker's
            lines = lines[:-2]
        return [orjson.loads(line) for line in lines]

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool]) -> None:
        deadline = time.monotonic() + WAIT
        with self._condition:
            while not predicate([orjson.loads(line) for line in self.lines if line]):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.process.poll() is not None:
                    raise AssertionError(
                        f"worker never got there; stdout:\n{chr(10).join(self.lines)}\n"
                        f"stderr:\n{self.stderr}"
                    )
                self._condition.wait(min(remaining, 0.5))

    def wait_ready(self) -> None:
        self.wait_for(lambda events: any(e["event"].endswith(" ready.") for e in events))

    def finished(self, task_id: str) -> list[dict[str, Any]]:
        return [
            e for e in self.events() if e["event"] == "task_finished" and e["task_id"] == task_id
        ]

    def wait_finished(self, task_id: str, state: str = "success") -> None:
        self.wait_for(
            lambda events: any(
                e["event"] == "task_finished"
                and e.get("task_id") == task_id
                and e["state"] == state
                for e in events
            )
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        self._errors.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def running_worker(
    broker_url: str, *, command: tuple[str, ...] = ("worker", "-P", "solo"), **env: str
) -> Iterator[Worker]:
    worker = Worker(broker_url, env, command=command)
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
        delete_queue(broker_url, worker.queue)


def delete_queue(broker_url: str, queue: str) -> None:
    """Leave nothing behind on the shared brokers: the test's queue and its exchange."""
    from kombu import Connection

    if broker_url.startswith("redis://"):
        import redis

        with redis.Redis.from_url(broker_url, socket_timeout=5) as client:
            # kombu's bindings of the queue, and the queue itself.
            client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}", queue)
        return
    with suppress(OSError), Connection(broker_url, connect_timeout=5) as connection:
        channel = connection.default_channel
        channel.queue_delete(queue)
        channel.exchange_delete(queue)


@pytest.fixture
def publisher() -> Iterator[Callable[[str], Celery]]:
    """A Celery app wired by init_celery, for publishing from the test process."""
    apps: list[Celery] = []

    def make(broker_url: str) -> Celery:
        app = init_celery(Celery("publisher"), settings=load_settings())
        app.conf.broker_url = broker_url
        apps.append(app)
        celery_tasks.publisher = app
        return app

    yield make
    celery_tasks.publisher = None
    for app in apps:
        app.close()
    reset_celery()


def assert_carried(worker: Worker, task_id: str, request_id: str) -> None:
    lines = [e for e in worker.events() if e.get("task_id") == task_id]
    events = [e["event"] for e in lines]
    assert "echo_ran" in events
    assert events.count("task_finished") == 1
    # Every line the task wrote carries both ids (the received line is written before
    # the task runs, with the task's id only).
    for line in lines:
        if "received" not in line["event"]:
            assert line["request_id"] == request_id, line
        assert line["task_name"] == "tests.echo", line


def test_a_task_published_in_a_flask_request_carries_its_request_id(
    celery_redis_url: str, publisher: Callable[[str], Celery]
) -> None:
    from flask import Flask, jsonify

    from backend_kit.flask import init_app

    app = init_app(Flask("shop"), settings=load_settings())
    celery_app = publisher(celery_redis_url)

    with running_worker(celery_redis_url) as worker:

        @app.post("/checkout")
        def checkout() -> Any:
            result = celery_app.send_task(
                "tests.echo", args=(CANARY,), kwargs={"card": CANARY}, queue=worker.queue
            )
            return jsonify(task_id=result.id)

        response = app.test_client().post("/checkout", headers={"X-Request-ID": "flask-req-1"})
        task_id = response.get_json()["task_id"]
        worker.wait_finished(task_id)
    assert_carried(worker, task_id, "flask-req-1")
    assert CANARY not in "\n".join(worker.lines) + worker.stderr


@pytest.mark.django_db
def test_a_task_published_in_a_django_request_over_rabbitmq(
    rabbitmq_url: str, publisher: Callable[[str], Celery]
) -> None:
    from django.test import Client

    from backend_kit.django._state import setup

    setup()
    publisher(rabbitmq_url)
    with running_worker(rabbitmq_url) as worker:
        response = Client().get(
            "/publish-task",
            {"queue": worker.queue, "value": CANARY},
            headers={"X-Request-ID": "django-req-1"},
        )
        assert response.status_code == 200
        task_id = response.json()["task_id"]
        worker.wait_finished(task_id)
    assert_carried(worker, task_id, "django-req-1")
    assert CANARY not in "\n".join(worker.lines) + worker.stderr


def test_outcomes_sentry_and_secrets_on_one_worker(
    celery_redis_url: str, publisher: Callable[[str], Celery]
) -> None:
    app = publisher(celery_redis_url)
    with sentry_receiver() as receiver:  # noqa: SIM117 - the worker needs the receiver's DSN
        with running_worker(
            celery_redis_url,
            # The pool most workers run: tasks in a forked child process.
            command=("worker", "-P", "prefork", "--concurrency", "1"),
            SENTRY_DSN=receiver.dsn,
        ) as worker:
            queue = worker.queue
            with request_context("req-outcomes"):
                ok = app.send_task("tests.echo", args=(CANARY,), queue=queue).id
                failed = app.send_task(
                    "tests.fail", args=(CANARY,), kwargs={"token": CANARY}, queue=queue
                ).id
                retried = app.send_task("tests.flaky", args=(1,), queue=queue).id
                inner = app.send_task("tests.inner_retry", queue=queue).id
            outside = app.send_task("tests.noop", queue=queue).id
            # Revoked before it is published: the worker discards it when it arrives.
            revoked = str(uuid.uuid4())
            replies = app.control.revoke(revoked, reply=True, limit=1, timeout=WAIT / 3)
            assert replies, "the worker did not acknowledge the revoke"
            with request_context("req-revoked"):
                app.send_task("tests.echo", args=(CANARY,), task_id=revoked, queue=queue)
            worker.wait_finished(revoked, "revoked")
            for task_id in (ok, inner, outside):
                worker.wait_finished(task_id)
            worker.wait_finished(failed, "failure")
            worker.wait_finished(retried, "retry")
            worker.wait_finished(retried, "success")
            receiver.wait_for(lambda r: len(r.events) >= 1)
        # The worker has exited: sentry-sdk flushed everything it had queued.

    events = worker.events()  # every stdout line is a JSON log line
    finished = [
        (e["task_name"], e["state"], e["retries"]) for e in events if e["event"] == "task_finished"
    ]
    assert sorted(finished) == sorted(
        [
            ("tests.echo", "success", 0),
            ("tests.fail", "failure", 0),
            ("tests.flaky", "retry", 0),
            ("tests.flaky", "success", 1),
            ("tests.inner_retry", "success", 0),
            ("tests.noop", "success", 0),
            ("tests.echo", "revoked", 0),
        ]
    )
    (revoked_finished,) = worker.finished(revoked)
    assert revoked_finished["request_id"] == "req-revoked"
    for event in events:
        if event["event"] == "task_finished":
            assert isinstance(event["duration_ms"], float)
            assert event["duration_ms"] >= 0
    # A task retried by Celery keeps its task id and the publisher's request id.
    flaky = [e for e in events if e["event"] == "flaky_attempt"]
    assert [(e["attempt"], e["task_id"], e["request_id"]) for e in flaky] == [
        (0, retried, "req-outcomes"),
        (1, retried, "req-outcomes"),
    ]
    # backend_kit's @retry inside a task logs its attempt with the task's ids.
    (retry_line,) = [e for e in events if e["event"] == "retry_scheduled"]
    assert (retry_line["task_id"], retry_line["request_id"]) == (inner, "req-outcomes")
    # A task published outside any request gets a fresh request id of its own.
    (noop_finished,) = worker.finished(outside)
    assert noop_finished["request_id"] not in ("req-outcomes", None)

    # Exactly one event reached Sentry, for the failing task. The only other item is
    # sentry-sdk's client report, counting the duplicate its dedupe dropped (the same
    # exception, logged by Celery).
    kinds = [item.type for item in receiver.items]
    assert kinds.count("event") == 1, kinds
    assert set(kinds) <= {"event", "client_report"}, kinds
    for report in receiver.of_type("client_report"):
        assert {d["reason"] for d in report["discarded_events"]} == {"event_processor"}
    (event,) = receiver.events
    assert event["tags"]["request_id"] == "req-outcomes"
    assert event["tags"]["task_id"] == failed
    assert event["tags"]["task_name"] == "tests.fail"
    assert event["exception"]["values"][-1]["value"] == "the payment provider said no"
    everything = b"\n".join(receiver.raw_bodies).decode() + "\n".join(worker.lines)
    assert CANARY not in everything + worker.stderr


def _probe(probe: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable, "-m", "backend_kit.cli", "health", probe,
            "--registry", "backend_kit.celery:worker_health",
        ],
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=WAIT,
    )  # fmt: skip


def test_worker_health_through_the_cli_while_the_broker_goes_away_and_back(
    tmp_path: Path, publisher: Callable[[str], Celery]
) -> None:
    heartbeat = tmp_path / "worker.heartbeat"
    with redis_server() as broker:
        env = {
            "CELERY_BROKER_URL": broker.url,
            "CELERY_HEARTBEAT_FILE": str(heartbeat),
            "CELERY_HEARTBEAT_SECONDS": "30",
            "HEALTH_CHECK_TIMEOUT": "1",
        }
        # Before the worker starts there is no heartbeat: not alive.
        assert _probe("live", env).returncode == 1
        with running_worker(broker.url, **env) as worker:
            assert heartbeat.exists()
            up_live, up_ready = _probe("live", env), _probe("ready", env)
            assert (up_live.returncode, up_ready.returncode) == (0, 0), up_ready.stdout

            broker.stop()
            down_live, down_ready = _probe("live", env), _probe("ready", env)
            assert down_live.returncode == 0, down_live.stdout
            assert down_ready.returncode == 1
            assert "broker:responseTime: fail" in down_ready.stdout

            broker.start()
            back_ready = _probe("ready", env)
            assert back_ready.returncode == 0, back_ready.stdout
            # The worker reconnected and consumes again.
            app = publisher(broker.url)
            task_id = app.send_task("tests.noop", queue=worker.queue).id
            worker.wait_finished(task_id)
        # A stopped worker removes its heartbeat: not alive any more.
        assert not heartbeat.exists()
        assert _probe("live", env).returncode == 1


def test_worker_health_without_a_broker_is_a_usage_error() -> None:
    result = _probe("ready", {})
    assert result.returncode == 2
    assert "CELERY_BROKER_URL" in result.stderr
    assert "Traceback" not in result.stderr


def _published_headers(app: Celery, **options: Any) -> dict[str, Any]:
    """Publish tests.echo to kombu's in-memory transport and read the message back."""
    queue = f"bk-test-{uuid.uuid4().hex}"
    app.send_task("tests.echo", queue=queue, **options)
    with app.connection_for_read() as connection:
        simple = connection.SimpleQueue(queue)
        try:
            message = simple.get(timeout=5)
            message.ack()
            return dict(message.headers)
        finally:
            simple.close()


def test_published_headers_carry_the_request_id_and_hide_arguments(
    publisher: Callable[[str], Celery],
) -> None:
    app = publisher("memory://")
    with request_context("req-headers"):
        headers = _published_headers(app, args=(CANARY,), kwargs={"password": CANARY})
    assert headers["x-request-id"] == "req-headers"
    assert headers["argsrepr"] == headers["kwargsrepr"] == ARGS_PLACEHOLDER
    outside = _published_headers(app)
    assert "x-request-id" not in outside


def test_opted_in_arguments_go_through_the_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERY_LOG_TASK_ARGS", "true")
    app = init_celery(Celery("publisher"), settings=load_settings())
    app.conf.broker_url = "memory://"
    try:
        headers = _published_headers(app, args=("visible",), kwargs={"password": CANARY})
    finally:
        app.close()
        reset_celery()
    assert headers["argsrepr"] == "['visible']"
    assert headers["kwargsrepr"] == "{'password': '***'}"


# --- context into threads ----------------------------------------------------------------


def test_threads_and_executors_see_the_context_they_were_started_in() -> None:
    seen: list[Any] = []
    with request_context("req-threads", tenant="acme"):
        thread = start_thread(lambda: seen.append(dict(current_context())), name="bk-test")
        thread.join(timeout=10)
        with ThreadPoolExecutor(1) as pool:
            from_pool = submit_with_context(pool, lambda: dict(current_context())).result(10)
        later = with_current_context(lambda: dict(current_context()))
    expected = {"request_id": "req-threads", "tenant": "acme"}
    assert seen == [expected]
    assert from_pool == expected
    assert later() == expected  # called after the block exited, still in its copy


def test_what_a_thread_binds_stays_in_its_copy() -> None:
    with request_context("req-copy"):

        def bind() -> str:
            bind_context(step="inside")
            return str(current_context()["step"])

        assert run_with_context(bind) == "inside"
        with ThreadPoolExecutor(1) as pool:
            assert submit_with_context(pool, bind).result(10) == "inside"
        assert "step" not in current_context()


def test_headers_round_trip_and_unsafe_ids_are_dropped() -> None:
    with request_context("req-carrier"):
        headers = inject_context({})
    assert extract_context(headers) == {"request_id": "req-carrier"}
    assert inject_context({}) == {}
    assert extract_context({"x-request-id": "bad\nid"}) == {}
    assert extract_context({"x-request-id": "x" * 129}) == {}
    assert extract_context(None) == {}


def test_beat_logs_through_the_pipeline_and_its_tasks_get_fresh_request_ids(
    celery_redis_url: str, tmp_path: Path
) -> None:
    with running_worker(celery_redis_url) as worker:
        beat = Worker(
            celery_redis_url,
            {"BK_TEST_BEAT": "1"},
            command=("beat",),
            queue=worker.queue,
            tmp=tmp_path,
        )
        try:
            worker.wait_for(lambda events: sum(e["event"] == "task_finished" for e in events) >= 2)
        finally:
            beat.stop()
    beat_events = beat.events()  # every line of beat's output is a JSON log line
    assert beat_events[0]["event"] == "beat: Starting..."
    assert all(e["logger"].startswith("celery") for e in beat_events)
    finished = [e for e in worker.events() if e["event"] == "task_finished"]
    assert {e["task_name"] for e in finished} == {"tests.noop"}
    request_ids = [e["request_id"] for e in finished]
    assert len(set(request_ids)) == len(request_ids)  # one fresh id per task


@pytest.mark.parametrize("opted_in", [False, True])
def test_celery_lines_lose_the_arguments_unless_opted_in(
    opted_in: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's task-received line, as Celery writes it, through the filter init_celery
    installs: arguments replaced (or kept, when opted in), the task's ids added."""
    import logging

    from backend_kit import configure
    from backend_kit.testing import capture_logs

    if opted_in:
        monkeypatch.setenv("CELERY_LOG_TASK_ARGS", "true")
    configure(load_settings())
    init_celery(Celery("publisher"))
    fields = {"id": "t-1", "name": "tests.echo", "args": repr((CANARY,)), "kwargs": "{}"}
    try:
        with capture_logs() as logs:
            logging.getLogger("celery.worker.strategy").info(
                "Task %(name)s[%(id)s] received: %(args)s", fields, extra={"data": fields}
            )
    finally:
        reset_celery()
    (line,) = logs
    assert (line["task_id"], line["task_name"]) == ("t-1", "tests.echo")
    if opted_in:
        assert CANARY in line["event"]
        assert line["data"]["args"] == repr((CANARY,))
    else:
        assert line["event"] == f"Task tests.echo[t-1] received: {ARGS_PLACEHOLDER}"
        assert "data" not in line


def test_the_amqp_broker_check_passes_on_rabbitmq_and_gives_up_on_a_silent_server(
    rabbitmq_url: str,
) -> None:
    from backend_kit.celery import broker_check
    from backend_kit.health import HealthRegistry, HealthRunner
    from tests.servers import silent_tcp_server

    up = HealthRunner(HealthRegistry([broker_check(rabbitmq_url, timeout=2)]), cache_seconds=0)
    assert up.ready().status == "pass"
    with silent_tcp_server() as port, ThreadPoolExecutor(1) as pool:
        silent = broker_check(f"amqp://guest:guest@127.0.0.1:{port}//", timeout=0.5)
        # The client itself gives up (the runner's deadline would only abandon it).
        started = time.monotonic()
        future = pool.submit(silent.run)
        error = future.exception(timeout=WAIT)
        elapsed = time.monotonic() - started
    assert isinstance(error, Exception)
    assert elapsed < 2, elapsed  # a handshake that never comes costs the timeout, once
