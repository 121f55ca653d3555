"""Logging never hurts a request: failing writes, failing steps, reconfiguration under load."""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

import orjson
import pytest
from flask import Flask

import backend_kit
from backend_kit import configure_logging, current_request_id, get_logger, load_settings
from backend_kit._logging import forwarding_failures, sink
from backend_kit._sentry import reset_sentry
from backend_kit.flask import init_app

from .sentry_receiver import SentryReceiver, sentry_receiver

SECRET = "hunter2-9f8e7d6c"


@pytest.fixture
def broken_stdout() -> Iterator[io.TextIOWrapper]:
    """A text stream on a real pipe whose reading end is closed: every flush raises
    BrokenPipeError, as stdout does when the log collector went away."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_end, "w")), encoding="utf-8")
    yield stream
    with suppress(OSError):
        stream.close()


def _flask_app() -> Flask:
    app = Flask("svc")

    @app.get("/whoami")
    def whoami() -> dict[str, str | None]:
        get_logger("svc").info("answering", password=SECRET)
        return {"request_id": current_request_id()}

    settings = load_settings(service_name="svc", environment="test", log_format="json")
    return init_app(app, settings=settings)


def test_a_broken_stdout_never_fails_a_request_nor_leaves_its_context(
    broken_stdout: io.TextIOWrapper, capfd: pytest.CaptureFixture[str]
) -> None:
    app = _flask_app()
    configure_logging(load_settings(), format="json", stream=broken_stdout)
    client = app.test_client()
    before = sink.dropped
    for number in range(20):
        response = client.get("/whoami", headers={"X-Request-ID": f"rid-{number}"})
        assert response.status_code == 200
        assert response.get_json() == {"request_id": f"rid-{number}"}
        assert response.headers["X-Request-ID"] == f"rid-{number}"
        # The test client runs the app on this thread: nothing may be left bound to it.
        assert current_request_id() is None
    # Two lines per request (the app's and request_finished), none written.
    assert sink.dropped - before == 40
    reports = [
        line for line in capfd.readouterr().err.splitlines() if "could not be written" in line
    ]
    assert len(reports) == 1  # once per interval, not once per line
    assert "BrokenPipeError" in reports[0]


def test_stdlib_records_on_a_broken_stdout_are_counted_not_raised(
    broken_stdout: io.TextIOWrapper, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_logging(load_settings(), format="json", stream=broken_stdout)
    before = sink.dropped
    for number in range(5):
        logging.getLogger("somelib").warning("record %d", number)
    assert sink.dropped - before == 5
    assert "Traceback" not in capfd.readouterr().err


def test_a_broken_stdout_under_concurrent_requests_leaks_nothing(
    broken_stdout: io.TextIOWrapper,
) -> None:
    app = _flask_app()
    configure_logging(load_settings(), format="json", stream=broken_stdout)
    failures: list[str] = []

    def serve(worker: int) -> None:
        client = app.test_client()
        for number in range(50):
            rid = f"w{worker}-{number}"
            response = client.get("/whoami", headers={"X-Request-ID": rid})
            if response.status_code != 200 or response.get_json() != {"request_id": rid}:
                failures.append(f"{rid}: {response.status_code} {response.get_data()!r}")
            if current_request_id() is not None:
                failures.append(f"{rid}: context left behind")

    threads = [threading.Thread(target=serve, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


class _UnprintableError(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("repr refused")

    def __str__(self) -> str:
        raise RuntimeError("str refused")


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with sentry_receiver() as running:
        yield running
    reset_sentry(timeout=0)


def test_with_sentry_on_an_argument_whose_repr_raises_does_not_raise(
    receiver: SentryReceiver, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(sentry_dsn=receiver.dsn, environment="test")
    backend_kit.configure(settings)
    stream = io.StringIO()
    configure_logging(settings, format="json", stream=stream)
    before = forwarding_failures.count
    log = get_logger("svc")
    log.error(_UnprintableError())  # type: ignore[arg-type]
    log.error("with a field", detail=_UnprintableError())
    log.error("plain")
    # Nothing raised; every call left a line (the unprintable value has a placeholder).
    lines = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    events = [line["event"] for line in lines]
    assert events[1:] == ["with a field", "plain"]
    assert len(lines) == 3
    assert lines[1]["detail"].startswith("<_UnprintableError")
    assert forwarding_failures.count - before >= 1
    assert "could not be forwarded to Sentry" in capfd.readouterr().err
    receiver.wait_for(lambda r: "plain" in [e.get("logentry", {}).get("message") for e in r.events])


def test_reconfiguring_under_load_never_lets_an_event_skip_redaction() -> None:
    stream = io.StringIO()
    configure_logging(load_settings(), format="json", stream=stream)
    stop = threading.Event()
    written: list[int] = []

    def log_secrets(worker: int) -> None:
        log = get_logger("svc")
        count = 0
        while not stop.is_set() and count < 20_000:
            log.warning("login", password=SECRET, worker=worker)
            count += 1
        written.append(count)

    threads = [threading.Thread(target=log_secrets, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for round_number in range(300):
        configure_logging(
            load_settings(),
            format="json",
            level="INFO" if round_number % 2 else "DEBUG",
            levels={"other": "ERROR"} if round_number % 3 else {},
            stream=stream,
        )
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    lines = stream.getvalue().splitlines()
    assert len(lines) == sum(written)  # none lost
    assert not [line for line in lines if SECRET in line]
    parsed: list[dict[str, Any]] = [orjson.loads(line) for line in lines]
    assert {line["password"] for line in parsed} == {"***"}


# --- LOG_MAX_LINE_BYTES -----------------------------------------------------------------


def _recurse(depth: int) -> None:
    if depth == 0:
        raise ValueError("deep down")
    _recurse(depth - 1)


def test_lines_above_the_cap_keep_their_head_and_a_marker_and_stay_json() -> None:
    stream = io.StringIO()
    configure_logging(load_settings(log_max_line_bytes=4096), format="json", stream=stream)
    log = get_logger("svc")
    log.info("export", payload="x" * 65536, small="kept", number=7)
    log.info("several", first="a" * 3000, second="b" * 3000, third="c" * 100)
    try:
        _recurse(60)
    except ValueError:
        log.exception("failed", detail="y" * 10_000)
    log.info("short", value="z" * 100)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert all(len(line.encode()) <= 4096 for line in lines)
    export, several, failed, short = (orjson.loads(line) for line in lines)
    assert export["event"] == "export"
    assert (export["small"], export["number"]) == ("kept", 7)
    assert export["payload"].startswith("x" * 1000)
    assert export["payload"].endswith("characters cut]")
    assert several["third"] == "c" * 100  # the longest values were cut first
    # The traceback keeps its first and last frames: where it started and where it broke.
    (chained,) = failed["exception"]
    frames = chained["frames"]
    assert len(frames) == 11
    assert "frames_omitted" in frames[5]
    assert (
        frames[0]["name"] == "test_lines_above_the_cap_keep_their_head_and_a_marker_and_stay_json"
    )
    assert frames[-1]["name"] == "_recurse"
    assert chained["exc_value"] == "deep down"
    assert short["value"] == "z" * 100  # a line under the cap is untouched


def test_without_a_cap_long_lines_are_written_whole() -> None:
    stream = io.StringIO()
    configure_logging(load_settings(), format="json", stream=stream)
    get_logger("svc").info("export", payload="x" * 65536)
    assert orjson.loads(stream.getvalue())["payload"] == "x" * 65536


def test_lines_dropped_after_the_last_report_are_reported_at_exit() -> None:
    import subprocess
    import sys

    script = (
        "import io, os\n"
        "from backend_kit import configure_logging, get_logger, load_settings\n"
        "read_end, write_end = os.pipe()\n"
        "os.close(read_end)\n"
        "stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_end, 'w')))\n"
        "configure_logging(load_settings(), format='json', stream=stream)\n"
        "for number in range(5):\n"
        "    get_logger('svc').info('lost', number=number)\n"
        "configure_logging(load_settings(), format='json')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    reports = [line for line in result.stderr.splitlines() if "could not be written" in line]
    assert [line.split(" log line")[0] for line in reports] == [
        "backend_kit: 1",  # the first, at once
        "backend_kit: 4",  # the rest, at exit
    ]
    assert "(5 since start)" in reports[1]
