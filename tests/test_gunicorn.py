"""backend_kit.gunicorn against a real gunicorn: drain on SIGTERM, one log stream whose
lines stay whole on a pipe, a bad configuration reported once, probes on HEALTH_PORT."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .servers import free_port, gunicorn_server, wait_for_port
from .test_deployment import DJANGO, FLASK, Image
from .test_examples import EXAMPLES, _clean_env, prepare

APP_DIR = Path(__file__).parent / "lifecycle_app"
CONFIG = ["-c", "python:backend_kit.gunicorn"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="gunicorn needs POSIX")


def _env(**settings: str) -> dict[str, str]:
    return {**_clean_env(), "LOG_FORMAT": "json", "HEALTH_CACHE_SECONDS": "0", **settings}


def _get(port: int, path: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def _wait_ready(port: int, timeout: float = 30.0) -> None:
    """Workers boot after gunicorn binds its port: wait for readiness to pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if _get(port, "/readyz", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"readiness never passed on port {port}")
        time.sleep(0.1)


def _json_lines(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    parsed, broken = [], []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            parsed.append(json.loads(line))
        except ValueError:
            broken.append(line[:200])
    return parsed, broken


# --- SIGTERM: the drain timeline ----------------------------------------------------


@dataclass
class Outcome:
    path: str
    started: float
    ended: float
    status: int | None = None
    connection: str = ""
    error: str | None = None


@dataclass
class Timeline:
    sigterm: float
    first_503: float | None = None
    stopped_routing: float | None = None
    exited: float | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


DRAIN_SECONDS = 3.0
# How long the modelled load balancer keeps routing after it saw readiness fail
# (Kubernetes: the probe period times the failure threshold, plus endpoint propagation).
ROUTING_LAG = 0.5


def _client(port: int, timeline: Timeline, routing: threading.Event) -> None:
    # One kept-alive connection, reopened when the server says Connection: close.
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    for _ in range(5000):
        if not routing.is_set():
            break
        started = time.monotonic()
        outcome = Outcome("/work", started, started)
        try:
            connection.request("GET", "/work")
            response = connection.getresponse()
            response.read()
            outcome.status = response.status
            outcome.connection = (response.getheader("Connection") or "").lower()
        except OSError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
            connection.close()
        outcome.ended = time.monotonic()
        timeline.add(outcome)
    connection.close()


def _load_balancer(port: int, timeline: Timeline, routing: threading.Event) -> None:
    """Polls readiness like a Kubernetes readiness probe; stops routing a little after
    the first failure, as endpoints are updated."""
    for _ in range(400):
        try:
            status = _get(port, "/readyz", timeout=5)[0]
        except OSError:
            break  # the listener is closed: the process is stopping
        now = time.monotonic()
        if status == 503 and timeline.first_503 is None:
            timeline.first_503 = now
        lagged = timeline.first_503 is not None and now - timeline.first_503 >= ROUTING_LAG
        if lagged and routing.is_set():
            timeline.stopped_routing = now
            routing.clear()
        time.sleep(0.05)
    routing.clear()


def _slow_request_in_flight_at_stop(port: int, timeline: Timeline) -> None:
    # Sent a second before the drain ends: it is still running when the workers stop.
    time.sleep(max(0.0, timeline.sigterm + DRAIN_SECONDS - 1.0 - time.monotonic()))
    started = time.monotonic()
    outcome = Outcome("/slow", started, started)
    try:
        outcome.status, headers, _ = _get(port, "/slow?seconds=2", timeout=20)
        outcome.connection = headers.get("connection", "")
    except OSError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.ended = time.monotonic()
    timeline.add(outcome)


def test_sigterm_drains_then_stops_gracefully_without_losing_a_request(tmp_path: Path) -> None:
    # A keep-alive longer than the test: gunicorn's 2 s default would close a connection
    # whose client thread a busy machine kept idle that long, and the client's next request
    # on it would race the close. That is keep-alive's own race, not a drain's loss.
    options = [
        *CONFIG,
        *("--workers", "2", "--threads", "4", "--graceful-timeout", "10", "--keep-alive", "30"),
    ]
    env = _env(SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS))
    with gunicorn_server(
        "app:app", cwd=APP_DIR, env=env, log_path=tmp_path / "gunicorn.log", options=options
    ) as server:
        _wait_ready(server.port)
        routing = threading.Event()
        routing.set()
        timeline = Timeline(sigterm=0.0)
        clients = [
            threading.Thread(target=_client, args=(server.port, timeline, routing))
            for _ in range(4)
        ]
        for thread in clients:
            thread.start()
        time.sleep(0.5)  # load established on kept-alive connections
        timeline.sigterm = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        balancer = threading.Thread(target=_load_balancer, args=(server.port, timeline, routing))
        slow = threading.Thread(
            target=_slow_request_in_flight_at_stop, args=(server.port, timeline)
        )
        balancer.start()
        slow.start()
        returncode = server.process.wait(timeout=DRAIN_SECONDS + 10 + 15)
        timeline.exited = time.monotonic()
        for thread in [*clients, balancer, slow]:
            thread.join(timeout=30)
        output = server.output()

    assert returncode == 0, output[-3000:]
    lost = [o for o in timeline.outcomes if o.error is not None or o.status != 200]
    served = [o for o in timeline.outcomes if o.status == 200]
    assert timeline.first_503 is not None, "readiness never failed"
    last_200 = max(o.ended for o in served)
    figures = {
        "first_503_after_sigterm_s": round(timeline.first_503 - timeline.sigterm, 3),
        "last_200_after_sigterm_s": round(last_200 - timeline.sigterm, 3),
        "exit_after_sigterm_s": round(timeline.exited - timeline.sigterm, 3),
        "requests_served": len(served),
        "requests_after_first_503": sum(1 for o in served if o.started > timeline.first_503),
        "requests_lost": len(lost),
    }
    print("drain timeline:", json.dumps(figures))
    assert lost == [], lost[:5]
    # Readiness fails at once (the probe period is 50 ms here; margin for a busy machine).
    assert figures["first_503_after_sigterm_s"] < 1.5
    # The service kept serving while draining, the slow request included...
    assert any(o.started > timeline.first_503 for o in served)
    assert [o.status for o in timeline.outcomes if o.path == "/slow"] == [200]
    # ... and every response sent while draining told its client to reconnect.
    drained = [o for o in served if o.started > timeline.first_503 and o.path == "/work"]
    assert drained
    assert all(o.connection == "close" for o in drained)
    # Stopped after the drain, well within it plus the graceful timeout.
    assert DRAIN_SECONDS <= figures["exit_after_sigterm_s"] < DRAIN_SECONDS + 10
    lines, broken = _json_lines(output)
    assert broken == []
    assert any(line["event"].startswith("draining") for line in lines)


def test_sigterm_sent_to_every_process_at_once_still_drains(tmp_path: Path) -> None:
    """As an init that forwards signals to the process group does (dumb-init)."""
    options = [*CONFIG, "--workers", "2", "--threads", "2", "--graceful-timeout", "5"]
    env = _env(SHUTDOWN_DRAIN_SECONDS=str(DRAIN_SECONDS))
    with gunicorn_server(
        "app:app", cwd=APP_DIR, env=env, log_path=tmp_path / "gunicorn.log", options=options
    ) as server:
        _wait_ready(server.port)
        # Both workers booted (their hooks installed) before the signal: each answered.
        workers: set[int] = set()
        deadline = time.monotonic() + 20
        while len(workers) < 2:
            assert time.monotonic() < deadline, f"only workers {workers} answered"
            workers.add(json.loads(_get(server.port, "/work")[2])["pid"])
        sigterm = time.monotonic()
        for pid in [server.process.pid, *workers]:
            os.kill(pid, signal.SIGTERM)
        while _get(server.port, "/readyz")[0] != 503:  # the master took the signal
            assert time.monotonic() - sigterm < 1.5, "readiness never failed"
            time.sleep(0.02)
        answers = []
        while time.monotonic() - sigterm < DRAIN_SECONDS - 0.5:
            status, headers, _ = _get(server.port, "/work")
            answers.append((status, headers.get("connection")))
            time.sleep(0.05)
        ready = _get(server.port, "/readyz")[0]  # still draining
        returncode = server.process.wait(timeout=30)
        exited = time.monotonic() - sigterm
        output = server.output()
    assert returncode == 0, output[-3000:]
    assert answers
    assert set(answers) == {(200, "close")}
    assert ready == 503
    assert exited >= DRAIN_SECONDS
    lines, broken = _json_lines(output)
    assert broken == []
    # The workers kept serving: none stopped early and had to be replaced.
    assert sum(1 for line in lines if line["event"].startswith("Booting worker")) == 2, output


# --- one stream, lines whole on a pipe -------------------------------------------------


def _run_with_stdout_pipe(
    options: list[str], env: dict[str, str], work: Any
) -> tuple[int, list[bytes]]:
    """Run gunicorn with stdout and stderr on one real pipe; call *work(port)*; stop
    gunicorn with SIGTERM; return its exit status and every line it wrote."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *options, "app:app"]
    process = subprocess.Popen(
        command, cwd=APP_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    lines: list[bytes] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
    reader.start()
    try:
        wait_for_port(port, timeout=30)
        _wait_ready(port)
        work(port)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            returncode = process.wait(timeout=10)
        reader.join(timeout=30)
        stdout.close()
    return returncode, lines


BIG_LINES = 240
LINE_BYTES = 65536


def test_four_workers_write_64_kb_lines_to_one_pipe_none_interleaved_none_lost() -> None:
    def work(port: int) -> None:
        numbers = iter(range(BIG_LINES))
        numbers_lock = threading.Lock()
        failures: list[str] = []

        def send() -> None:
            while True:
                with numbers_lock:
                    number = next(numbers, None)
                if number is None:
                    return
                status, _, _ = _get(port, f"/big?n={number}&size={LINE_BYTES}", timeout=30)
                if status != 200:
                    failures.append(f"{number}: {status}")

        senders = [threading.Thread(target=send) for _ in range(8)]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(timeout=120)
        assert failures == []

    options = [*CONFIG, "--workers", "4", "--threads", "2", "--access-logfile", "-"]
    returncode, raw = _run_with_stdout_pipe(options, _env(SHUTDOWN_DRAIN_SECONDS="0"), work)
    assert returncode == 0
    lines, broken = _json_lines(b"".join(raw).decode("utf-8", "replace"))
    assert broken == []  # not one line interleaved with another
    big = [line for line in lines if line["event"] == "big_line"]
    assert sorted(line["n"] for line in big) == list(range(BIG_LINES))  # none lost
    assert {len(line["payload"]) for line in big} == {LINE_BYTES}
    assert len({line["pid"] for line in big}) > 1  # several workers did write
    # One stream, one format: the master's lines, the workers' and the access log.
    loggers = {line["logger"] for line in lines}
    assert {"gunicorn.error", "gunicorn.access", "backend_kit.request", "lifecycle"} <= loggers
    assert any(line["event"].startswith("Starting gunicorn") for line in lines)
    access = [line for line in lines if line["logger"] == "gunicorn.access"]
    big_access = [line for line in access if line["path"] == "/big"]
    assert len(big_access) == BIG_LINES
    assert {line["status"] for line in big_access} == {200}
    assert all({"timestamp", "level", "event", "logger"} <= line.keys() for line in lines)


# --- a bad configuration ----------------------------------------------------------------


def test_a_bad_configuration_is_printed_once_without_traceback_and_gunicorn_fails() -> None:
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", *CONFIG, "--bind", f"127.0.0.1:{port}", "app:app"],
        cwd=APP_DIR,
        env=_env(LOG_LEVEL="LOUD", HEALTH_PORT="not-a-port"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert output.count("2 problems in the configuration") == 1, output
    assert "LOG_LEVEL" in output
    assert "HEALTH_PORT" in output
    assert len(output.splitlines()) <= 5, output


def test_a_bad_value_found_by_the_workers_is_printed_once_for_all_of_them() -> None:
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", *CONFIG, "--bind", f"127.0.0.1:{port}"]
    result = subprocess.run(
        [*command, "--workers", "3", "prefixed_app:app"],
        cwd=APP_DIR,
        env=_env(PREFIXED_LOG_LEVEL="LOUD"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    assert output.count("the application cannot start") == 1, output
    assert output.count("- PREFIXED_LOG_LEVEL:") == 1, output


def test_a_health_port_in_use_stops_gunicorn_before_any_worker_starts() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        health_port = taken.getsockname()[1]
        port = free_port()
        result = subprocess.run(
            [sys.executable, "-m", "gunicorn", *CONFIG, "--bind", f"127.0.0.1:{port}", "app:app"],
            cwd=APP_DIR,
            env=_env(HEALTH_PORT=str(health_port)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    assert output.count(f"HEALTH_PORT {health_port}") == 1, output
    assert "Booting worker" not in output


# --- probes on HEALTH_PORT --------------------------------------------------------------


def test_liveness_on_the_health_port_answers_while_every_request_thread_is_busy(
    tmp_path: Path,
) -> None:
    health_port = free_port()
    options = [*CONFIG, "--workers", "1", "--threads", "2", "--graceful-timeout", "1"]
    env = _env(HEALTH_PORT=str(health_port), SHUTDOWN_DRAIN_SECONDS="0")
    with gunicorn_server(
        "app:app", cwd=APP_DIR, env=env, log_path=tmp_path / "gunicorn.log", options=options
    ) as server:
        _wait_ready(server.port)
        wait_for_port(health_port)
        busy = [
            threading.Thread(target=_get, args=(server.port, "/slow?seconds=5", 20))
            for _ in range(4)
        ]
        for thread in busy:
            thread.start()
        time.sleep(1.0)  # both request threads are now sleeping
        timings: dict[str, float] = {}
        answers: dict[str, int] = {}
        for name, port in (("health_port", health_port), ("main_port", server.port)):
            started = time.monotonic()
            answers[name] = _get(port, "/livez", timeout=20)[0]
            timings[name] = time.monotonic() - started
        ready_status, _, ready_body = _get(health_port, "/readyz")
        startup_status = _get(health_port, "/startupz")[0]
        for thread in busy:
            thread.join(timeout=30)
        assert _get(health_port, "/healthz")[0] == 404  # the report stays on the main port
    assert answers == {"health_port": 200, "main_port": 200}
    assert timings["health_port"] < 2.0, timings
    # The same probe on the main port waited for a request thread.
    assert timings["main_port"] > timings["health_port"] + 1.0, timings
    assert (ready_status, startup_status) == (200, 200)
    assert json.loads(ready_body)["status"] == "pass"


def test_the_hooks_can_be_imported_into_a_configuration_of_ones_own(tmp_path: Path) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text(
        "from backend_kit.gunicorn import *  # noqa: F403\nworkers = 1\n", encoding="utf-8"
    )
    options = ["-c", str(config), "--graceful-timeout", "1"]
    with gunicorn_server(
        "app:app",
        cwd=APP_DIR,
        env=_env(SHUTDOWN_DRAIN_SECONDS="0"),
        log_path=tmp_path / "gunicorn.log",
        options=options,
    ) as server:
        _wait_ready(server.port)
        assert _get(server.port, "/work")[0] == 200
        output = server.output()
    lines, broken = _json_lines(output)
    assert broken == []
    assert any(line["event"].startswith("Booting worker") for line in lines)


# --- the examples' images: the same behaviour for Flask and Django ----------------------


@pytest.mark.parametrize("image", [FLASK, DJANGO], ids=["flask", "django"])
def test_each_example_image_drains_on_sigterm_and_answers_probes_on_the_health_port(
    image: Image, tmp_path: Path
) -> None:
    health_port = free_port()
    run_settings = {
        **image.settings,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data.sqlite3'}",
        "SHUTDOWN_DRAIN_SECONDS": "1.5",
        "HEALTH_PORT": str(health_port),
    }
    (tmp_path / "secrets").mkdir()
    env = {
        **_clean_env(),
        **image.dockerfile.env,
        **{f"{image.prefix}{name}": value for name, value in run_settings.items()},
        "BACKEND_KIT_SECRETS_DIR": str(tmp_path / "secrets"),
    }
    cwd = EXAMPLES / image.folder
    prepare(image.prepare, cwd=cwd, env=env)
    cmd = image.dockerfile.cmd
    assert cmd[1:3] == ["-c", "python:backend_kit.gunicorn"]
    bind = cmd.index("--bind")
    options = cmd[1:bind] + cmd[bind + 2 : -1]
    with gunicorn_server(
        cmd[-1], cwd=cwd, env=env, log_path=tmp_path / "gunicorn.log", options=options
    ) as server:
        _wait_ready(server.port)
        assert _get(health_port, "/livez")[0] == 200
        assert _get(health_port, "/readyz")[0] == 200
        sigterm = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        deadline = sigterm + 10
        while (ready := _get(server.port, "/readyz"))[0] != 503:
            assert time.monotonic() < deadline, "readiness never failed"
            time.sleep(0.05)
        first_503 = time.monotonic() - sigterm
        # Still serving, on both ports, and telling clients to reconnect.
        assert ready[1]["connection"] == "close"
        assert _get(health_port, "/readyz")[0] == 503
        assert _get(health_port, "/livez")[0] == 200
        status, headers, _ = _get(server.port, "/livez")
        assert (status, headers["connection"]) == (200, "close")
        returncode = server.process.wait(timeout=30)
        exited = time.monotonic() - sigterm
        output = server.output()
    assert returncode == 0, output[-3000:]
    assert first_503 < 1.5
    assert 1.5 <= exited < 1.5 + 15
    lines, broken = _json_lines(output)
    assert broken == [], broken[:3]
    assert any(line["event"].startswith("draining") for line in lines)
    assert any(line["event"].startswith("Shutting down") for line in lines)
