"""Structured logging: format, stdlib bridge, levels, context, redaction, reconfiguration."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import structlog

import backend_kit
from backend_kit import (
    configure_logging,
    get_logger,
    load_settings,
    request_context,
)
from backend_kit._logging import is_logging_configured, reset_logging
from backend_kit._redact import Redactor
from backend_kit.testing import capture_logs

ReadLines = Callable[[], list[dict[str, Any]]]


class _Stream(io.StringIO):
    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


@pytest.fixture
def stream() -> io.StringIO:
    return _Stream()


@pytest.fixture
def read(stream: io.StringIO) -> ReadLines:
    return lambda: _lines(stream)


def _configure_json(stream: io.StringIO, **settings: Any) -> None:
    configure_logging(load_settings(**settings), format="json", stream=stream)


def test_json_line_has_the_documented_fields(stream: io.StringIO, read: ReadLines) -> None:
    _configure_json(stream, service_name="billing", environment="staging")
    before = datetime.now(timezone.utc)
    get_logger("billing.invoices").info("invoice_sent", invoice_id=42, amount=9.5, paid=True)
    (line,) = read()
    assert list(line)[:6] == ["timestamp", "level", "event", "logger", "service", "environment"]
    assert line["level"] == "info"
    assert line["event"] == "invoice_sent"
    assert line["logger"] == "billing.invoices"
    assert line["service"] == "billing"
    assert line["environment"] == "staging"
    assert line["invoice_id"] == 42
    assert line["amount"] == 9.5
    assert line["paid"] is True
    assert line["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert (
        before - timedelta(seconds=5) <= stamp <= datetime.now(timezone.utc) + timedelta(seconds=5)
    )


def test_bound_fields_cannot_override_timestamp_and_level(
    stream: io.StringIO, read: ReadLines
) -> None:
    _configure_json(stream)
    get_logger("x").warning("tiered", level="gold", timestamp="yesterday", service="other")
    (line,) = read()
    assert line["level"] == "warning"
    assert line["timestamp"] != "yesterday"
    assert line["service"] == "other"  # descriptive fields may be overridden on purpose


def test_one_line_per_event_even_with_newlines(stream: io.StringIO, read: ReadLines) -> None:
    _configure_json(stream)
    get_logger("x").warning("multi\nline", detail="a\nb")
    assert len(stream.getvalue().splitlines()) == 1
    assert read()[0]["detail"] == "a\nb"


def test_get_logger_defaults_to_the_calling_module(stream: io.StringIO, read: ReadLines) -> None:
    _configure_json(stream)
    get_logger().info("hello")
    structlog.get_logger().info("hello again")
    assert [line["logger"] for line in read()] == [__name__, __name__]


def test_initial_values_are_bound(stream: io.StringIO, read: ReadLines) -> None:
    _configure_json(stream)
    log = get_logger("x", component="mailer")
    log.bind(attempt=2).info("sent")
    (line,) = read()
    assert line["component"] == "mailer"
    assert line["attempt"] == 2


def test_positional_arguments_are_formatted(stream: io.StringIO, read: ReadLines) -> None:
    _configure_json(stream)
    get_logger("x").info("user %s logged in", "ann")
    assert read()[0]["event"] == "user ann logged in"


def test_values_that_json_cannot_encode_are_written_as_redacted_text(
    stream: io.StringIO, read: ReadLines
) -> None:
    class Connection:
        def __str__(self) -> str:
            return "Connection(postgres://app:hunter2@db/app)"

    _configure_json(stream)
    get_logger("x").info("connected", conn=Connection(), tags={"a", "b"}, big=2**70)
    (line,) = read()
    assert line["conn"] == "Connection(postgres://app:***@db/app)"
    assert sorted(line["tags"]) == ["a", "b"]
    assert line["big"] == 2**70


def test_console_format_is_readable_and_not_json() -> None:
    stream = _Stream()
    configure_logging(load_settings(), format="console", stream=stream)
    get_logger("billing").info("invoice_sent", invoice_id=42, password="hunter2")
    text = stream.getvalue()
    assert "invoice_sent" in text
    assert "invoice_id=42" in text
    assert "[billing]" in text
    assert "hunter2" not in text
    assert "\x1b[" not in text  # no colours when the stream is not a terminal
    assert not text.lstrip().startswith("{")


@pytest.mark.parametrize(("tty", "is_json"), [(False, True), (True, False)])
def test_auto_format_depends_on_the_terminal(tty: bool, is_json: bool) -> None:
    stream = _Stream(tty=tty)
    configure_logging(load_settings(log_format="auto"), stream=stream)
    get_logger("x").info("hello")
    text = stream.getvalue().strip()
    assert text.startswith("{") is is_json


def test_log_format_and_level_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, read: ReadLines
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("LOG_LEVEL", "warning")
    configure_logging(stream=stream)
    log = get_logger("x")
    log.info("hidden")
    log.warning("shown")
    assert [line["event"] for line in read()] == ["shown"]


def test_keyword_arguments_override_the_settings(stream: io.StringIO, read: ReadLines) -> None:
    configure_logging(load_settings(log_level="ERROR"), level="DEBUG", format="json", stream=stream)
    get_logger("x").debug("visible")
    assert [line["event"] for line in read()] == ["visible"]


def test_bad_level_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="DEBUG, INFO, WARNING"):
        configure_logging(load_settings(), level="LOUD")
    with pytest.raises(ValueError, match="'json', 'console' or 'auto'"):
        configure_logging(load_settings(), format="xml")  # type: ignore[arg-type]


# --- standard library bridge -------------------------------------------------------


@pytest.mark.parametrize("name", ["werkzeug", "django.request", "gunicorn.error", "urllib3"])
def test_stdlib_loggers_render_through_the_same_pipeline(
    name: str, stream: io.StringIO, read: ReadLines
) -> None:
    _configure_json(stream, service_name="shop")
    with request_context("req-7"):
        logging.getLogger(name).warning(
            "status %s for %s", 502, "/pay?token=abc", extra={"peer": "10.0.0.1"}
        )
    (line,) = read()
    assert line["event"] == "status 502 for /pay?token=***"
    assert line["level"] == "warning"
    assert line["logger"] == name
    assert line["service"] == "shop"
    assert line["request_id"] == "req-7"
    assert line["peer"] == "10.0.0.1"
    raw = stream.getvalue()
    assert raw.count("WARNING") == 0  # no stdlib prefix, level shown once
    assert raw.count('"timestamp"') == 1


def test_stdlib_and_structlog_lines_have_the_same_keys(
    stream: io.StringIO, read: ReadLines
) -> None:
    _configure_json(stream)
    get_logger("a").info("one")
    logging.getLogger("b").info("two")
    first, second = read()
    assert list(first) == list(second)


def test_stdlib_exception_is_formatted_once_and_redacted(
    stream: io.StringIO, read: ReadLines
) -> None:
    _configure_json(stream)
    try:
        raise ConnectionError("upstream said Authorization: Bearer sk_live_canary")
    except ConnectionError:
        logging.getLogger("werkzeug").exception("request failed")
    (line,) = read()
    assert "sk_live_canary" not in stream.getvalue()
    (exception,) = line["exception"]
    assert exception["exc_type"] == "ConnectionError"
    assert "Bearer ***" in exception["exc_value"]


def test_server_loggers_with_their_own_handlers_are_adopted_and_restored(
    stream: io.StringIO, read: ReadLines
) -> None:
    gunicorn = logging.getLogger("gunicorn.error")
    own = logging.StreamHandler(io.StringIO())
    gunicorn.addHandler(own)
    gunicorn.propagate = False
    try:
        _configure_json(stream)
        gunicorn.info("Booting worker")
        assert [line["logger"] for line in read()] == ["gunicorn.error"]
        assert own.stream.getvalue() == ""
        reset_logging()
        assert gunicorn.handlers == [own]
        assert gunicorn.propagate is False
    finally:
        gunicorn.removeHandler(own)
        gunicorn.propagate = True


def test_configure_replaces_root_handlers_and_reset_restores_them(stream: io.StringIO) -> None:
    root = logging.getLogger()
    previous_handlers, previous_level = list(root.handlers), root.level
    _configure_json(stream)
    _configure_json(stream)
    assert len(root.handlers) == 1
    logging.getLogger("x").warning("once")
    assert len(stream.getvalue().splitlines()) == 1
    reset_logging()
    assert root.handlers == previous_handlers
    assert root.level == previous_level
    assert not is_logging_configured()


# --- levels ----------------------------------------------------------------------------


def test_per_logger_levels_from_the_settings(
    monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, read: ReadLines
) -> None:
    monkeypatch.setenv("LOG_LEVELS", "urllib3=WARNING,django.db.backends=DEBUG")
    _configure_json(stream)
    logging.getLogger("urllib3.connectionpool").info("hidden: below WARNING")
    logging.getLogger("urllib3.connectionpool").warning("retrying")
    logging.getLogger("django.db.backends").debug("(0.001) SELECT 1")
    logging.getLogger("other").debug("hidden: root is INFO")
    get_logger("urllib3").info("hidden: structlog too")
    get_logger("django.db.backends.schema").debug("CREATE TABLE")
    get_logger("other").debug("hidden: structlog root is INFO")
    assert [line["event"] for line in read()] == ["retrying", "(0.001) SELECT 1", "CREATE TABLE"]
    reset_logging()
    assert logging.getLogger("urllib3").level == logging.NOTSET
    assert logging.getLogger("django.db.backends").level == logging.NOTSET


class _CountingValue:
    def __init__(self) -> None:
        self.uses = 0

    def __str__(self) -> str:
        self.uses += 1
        return "counted"

    __repr__ = __str__


def test_a_call_below_the_level_runs_no_processor(stream: io.StringIO) -> None:
    _configure_json(stream)
    value = _CountingValue()
    log = get_logger("x")
    log.debug("skipped", value=value)
    structlog.get_logger("backend_kit.cache").debug("skipped", value=value)
    assert value.uses == 0
    assert stream.getvalue() == ""
    assert not log.is_enabled_for(logging.DEBUG)
    log.info("kept", value=value)
    assert value.uses == 1


def test_reconfiguring_reaches_loggers_cached_before(stream: io.StringIO) -> None:
    module_logger = structlog.get_logger("backend_kit.retry")
    first = _Stream()
    configure_logging(load_settings(), level="INFO", format="json", stream=first)
    module_logger.info("cached now")
    module_logger.debug("hidden")
    configure_logging(load_settings(), level="DEBUG", format="console", stream=stream)
    module_logger.debug("visible after reconfiguration")
    assert len(first.getvalue().splitlines()) == 1
    assert "visible after reconfiguration" in stream.getvalue()
    assert not stream.getvalue().startswith("{")


def test_configure_is_what_the_one_call_does(stream: io.StringIO, read: ReadLines) -> None:
    settings = load_settings(service_name="orders", log_format="json")
    configure_logging(settings, stream=stream)
    backend_kit.configure(settings)  # same settings again: still one handler, still JSON
    assert is_logging_configured()
    assert len(logging.getLogger().handlers) == 1


# --- context and redaction -------------------------------------------------------------


def test_request_context_is_on_every_line_and_gone_after(
    stream: io.StringIO, read: ReadLines
) -> None:
    _configure_json(stream)
    log = get_logger("x")
    with request_context("abc-1", user_id=5):
        log.info("inside")
        log.info("override", user_id=6)
    log.info("outside")
    inside, override, outside = read()
    assert (inside["request_id"], inside["user_id"]) == ("abc-1", 5)
    assert override["user_id"] == 6
    assert "request_id" not in outside
    assert "user_id" not in outside


def test_every_event_is_redacted(stream: io.StringIO, read: ReadLines) -> None:
    _configure_json(
        stream,
        database_url="postgres://app:Sup3rSecretPw@db:5432/app",
        redact_keys="customer_ssn",
    )
    get_logger("x").info(
        "connecting to postgres://app:Sup3rSecretPw@db:5432/app",
        password="hunter2",
        headers={"Authorization": "Bearer abc.def", "Accept": "json"},
        customer_ssn="123-45-6789",
        note="the password is Sup3rSecretPw",
    )
    (line,) = read()
    assert "hunter2" not in stream.getvalue()
    assert "Sup3rSecretPw" not in stream.getvalue()
    assert "abc.def" not in stream.getvalue()
    assert "123-45-6789" not in stream.getvalue()
    assert line["headers"] == {"Authorization": "***", "Accept": "json"}
    assert line["password"] == "***"


def test_helper_modules_logging_via_structlog_are_redacted(
    stream: io.StringIO, read: ReadLines
) -> None:
    _configure_json(stream)
    with request_context("r-9"):
        structlog.get_logger("backend_kit.cache").warning(
            "redis down", url="redis://:pw1234@cache:6379/0"
        )
    (line,) = read()
    assert line["url"] == "redis://:***@cache:6379/0"
    assert line["logger"] == "backend_kit.cache"
    assert line["request_id"] == "r-9"


def _fail_with_secret_local() -> None:
    api_token = "tok_local_canary_123"  # noqa: F841 - the local under test
    raise ValueError("payment refused")


def test_tracebacks_have_no_locals_by_default(stream: io.StringIO, read: ReadLines) -> None:
    _configure_json(stream)
    try:
        _fail_with_secret_local()
    except ValueError:
        get_logger("x").exception("failed")
    (line,) = read()
    assert "tok_local_canary_123" not in stream.getvalue()
    frames = line["exception"][0]["frames"]
    assert frames[-1]["name"] == "_fail_with_secret_local"
    assert all("locals" not in frame for frame in frames)


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_locals_when_turned_on_are_redacted(log_format: str) -> None:
    stream = _Stream()
    configure_logging(load_settings(log_traceback_locals=True), format=log_format, stream=stream)  # type: ignore[arg-type]
    try:
        _fail_with_secret_local()
    except ValueError:
        get_logger("x").exception("failed")
    text = stream.getvalue()
    assert "api_token" in text
    assert "tok_local_canary_123" not in text


def test_console_tracebacks_are_plain_and_redacted() -> None:
    stream = _Stream()
    configure_logging(load_settings(), format="console", stream=stream)
    try:
        raise PermissionError("denied for Bearer eyJhbGciOi.canary")
    except PermissionError:
        get_logger("x").exception("failed")
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text
    assert "PermissionError: denied for Bearer ***" in text
    assert "eyJhbGciOi.canary" not in text


def test_event_is_dropped_when_redaction_raises(
    monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, read: ReadLines
) -> None:
    _configure_json(stream)

    def broken(self: Redactor, value: Any, **options: Any) -> Any:
        raise RuntimeError("policy bug")

    monkeypatch.setattr(Redactor, "redact_for_output", broken)
    get_logger("payments").info("charge", card="4111111111111111")
    logging.getLogger("werkzeug").info("GET /?card=4111111111111111")
    lines = read()
    assert "4111111111111111" not in stream.getvalue()
    assert [line["event"] for line in lines] == ["log_event_dropped", "log_event_dropped"]
    assert lines[0]["level"] == "warning"
    assert lines[0]["source_logger"] == "payments"
    assert "RuntimeError" in lines[0]["reason"]


# --- capture_logs -------------------------------------------------------------------


def test_capture_logs_collects_structlog_and_stdlib_events() -> None:
    with capture_logs() as logs, request_context("cap-1"):
        get_logger("a").info("one", password="x")
        logging.getLogger("b").error("two")
    assert [(e["logger"], e["event"], e["level"]) for e in logs] == [
        ("a", "one", "info"),
        ("b", "two", "error"),
    ]
    assert logs[0]["password"] == "***"
    assert all(e["request_id"] == "cap-1" for e in logs)
    assert not is_logging_configured()  # it configured logging for the block only


def test_capture_logs_writes_nothing_and_keeps_an_existing_configuration(
    stream: io.StringIO,
) -> None:
    _configure_json(stream)
    with capture_logs() as logs:
        get_logger("a").info("captured")
    get_logger("a").info("written")
    assert [e["event"] for e in logs] == ["captured"]
    assert [line["event"] for line in _lines(stream)] == ["written"]


# --- concurrency -------------------------------------------------------------------


def test_fifty_threads_each_log_only_their_own_request_id(
    stream: io.StringIO, read: ReadLines
) -> None:
    _configure_json(stream)
    barrier = threading.Barrier(50)

    def serve(index: int) -> None:
        log = get_logger("worker")
        with request_context(f"thread-{index}", worker=index):
            barrier.wait(timeout=20)
            for step in range(5):
                log.info("step", step=step)
                logging.getLogger("werkzeug").info("stdlib step %d", step)

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    lines = read()
    assert len(lines) == 50 * 10
    for line in lines:
        assert line["request_id"] == f"thread-{line['worker']}"
    assert {line["request_id"] for line in lines} == {f"thread-{i}" for i in range(50)}


def test_fifty_asyncio_tasks_each_log_only_their_own_request_id(
    stream: io.StringIO, read: ReadLines
) -> None:
    _configure_json(stream)
    log = get_logger("task")

    async def serve(index: int) -> None:
        with request_context(f"task-{index}", worker=index):
            for step in range(5):
                await log.ainfo("step", step=step)
                await asyncio.sleep(0)
                logging.getLogger("aiohttp.access").info("stdlib step %d", step)

    async def main() -> None:
        await asyncio.gather(*(serve(i) for i in range(50)))

    asyncio.run(main())
    lines = read()
    assert len(lines) == 50 * 10
    for line in lines:
        assert line["request_id"] == f"task-{line['worker']}"


# --- the direct writer the request core uses ----------------------------------------


def _written_both_ways(stream: io.StringIO, fields: dict[str, Any]) -> list[str]:
    from backend_kit._logging import EventWriter

    EventWriter("backend_kit.request").write("warning", logging.WARNING, "done", dict(fields))
    get_logger("backend_kit.request").warning("done", **fields)
    return stream.getvalue().splitlines()


@pytest.mark.parametrize(
    "per_logger",
    [None, "backend_kit=INFO"],
    ids=["default pipeline", "per-logger levels"],
)
def test_the_direct_writer_writes_what_a_logger_writes(
    monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, per_logger: str | None
) -> None:
    if per_logger:
        monkeypatch.setenv("LOG_LEVELS", per_logger)
    _configure_json(stream, service_name="billing", environment="staging")
    from backend_kit._logging import _config

    # Without per-logger levels the writer calls the steps itself: both paths are covered.
    assert (_config._direct is not None) == (per_logger is None)
    fields = {
        "method": "GET",
        "route": None,
        "path": "/reset?token=abc123",
        "status": 404,
        "duration_ms": 1.5,
        "client": "4111 1111 1111 1111",
        "level": "forged",
    }
    with request_context("password:hunter2", tenant="acme", traceparent=None):
        direct, logged = _written_both_ways(stream, fields)
    first, second = json.loads(direct), json.loads(logged)
    assert list(first) == list(second)
    first.pop("timestamp"), second.pop("timestamp")
    assert first == second
    assert first["level"] == "warning"
    assert first["path"] == "/reset?token=***"
    assert first["client"] == "**** **** **** 1111"
    assert first["request_id"] == "password:***"
    assert first["tenant"] == "acme"


def test_the_direct_writer_follows_levels_captures_and_an_unconfigured_structlog(
    stream: io.StringIO,
) -> None:
    from backend_kit._logging import EventWriter

    writer = EventWriter("backend_kit.request")
    with structlog.testing.capture_logs() as before_configure:
        writer.write("info", logging.INFO, "unconfigured", {"status": 200})
    assert [(e["event"], e["status"]) for e in before_configure] == [("unconfigured", 200)]

    configure_logging(load_settings(), level="WARNING", format="json", stream=stream)
    writer.write("info", logging.INFO, "below the level", {})
    assert not writer.enabled(logging.INFO)
    with capture_logs() as captured:
        writer.write("error", logging.ERROR, "captured", {"status": 500})
    assert [(e["event"], e["level"], e["status"]) for e in captured] == [("captured", "error", 500)]
    assert stream.getvalue() == ""


def _timestamp_blanked(line: bytes) -> bytes:
    parsed = json.loads(line)
    return line.replace(parsed["timestamp"].encode(), b"T", 1)


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("max_line_bytes", [None, 1024], ids=["whole", "shortened"])
def test_the_direct_writer_writes_the_loggers_bytes_to_a_file(
    tmp_path: Any, max_line_bytes: int | None, unbuffered: bool
) -> None:
    # A real file: the direct writer's bytes go to its descriptor, the logger's text
    # through the stream; what lands on disk must be the same, in the order written.
    path = tmp_path / "lines.jsonl"
    settings: dict[str, Any] = {}
    if max_line_bytes is not None:
        settings["log_max_line_bytes"] = max_line_bytes
    # Unbuffered: how sys.stdout is made under PYTHONUNBUFFERED.
    with (
        io.TextIOWrapper(io.FileIO(path, "w"), encoding="utf-8", write_through=True)
        if unbuffered
        else open(path, "w", encoding="utf-8")
    ) as target:
        configure_logging(load_settings(**settings), format="json", stream=target)
        from backend_kit._logging import EventWriter, sink

        fields = {"path": "/café?token=abc", "status": 200, "note": "ü" * 600}
        target.write("printed before\n")  # still in the stream's buffer
        with request_context("req-1", tenant="acme"):
            EventWriter("backend_kit.request").write("info", logging.INFO, "done", dict(fields))
            get_logger("backend_kit.request").info("done", **fields)
        assert sink._fd_of == (target, target.fileno())  # the bytes path was taken
        target.write("printed after\n")
    first, direct, logged, last = path.read_bytes().splitlines()
    assert (first, last) == (b"printed before", b"printed after")
    assert _timestamp_blanked(direct) == _timestamp_blanked(logged)
    assert json.loads(direct)["path"] == "/café?token=***"
    if max_line_bytes is not None:
        assert len(direct) <= max_line_bytes < 1200


def test_the_direct_writer_writes_text_to_a_stream_that_is_not_utf8(tmp_path: Any) -> None:
    from backend_kit._logging import EventWriter

    path = tmp_path / "latin1.log"
    with open(path, "w", encoding="latin-1") as target:
        configure_logging(load_settings(), format="json", stream=target)
        EventWriter("backend_kit.request").write("info", logging.INFO, "done", {"who": "é"})
    assert json.loads(path.read_bytes().decode("latin-1"))["who"] == "é"


def test_the_direct_writer_drops_a_line_for_a_closed_file_without_raising(tmp_path: Any) -> None:
    from backend_kit._logging import EventWriter, sink

    target = open(tmp_path / "closed.log", "w", encoding="utf-8")  # noqa: SIM115
    configure_logging(load_settings(), format="json", stream=target)
    writer = EventWriter("backend_kit.request")
    writer.write("info", logging.INFO, "written", {})
    target.close()
    writer.write("info", logging.INFO, "dropped", {})
    assert sink.dropped == 1
    assert [
        json.loads(line)["event"] for line in (tmp_path / "closed.log").read_text().splitlines()
    ] == ["written"]


def test_threads_writing_through_the_direct_writer_never_interleave_lines(tmp_path: Any) -> None:
    from backend_kit._logging import EventWriter

    path = tmp_path / "threads.jsonl"
    with open(path, "w", encoding="utf-8") as target:
        configure_logging(load_settings(), format="json", stream=target)
        writer = EventWriter("backend_kit.request")

        def work(index: int) -> None:
            for step in range(100):
                writer.write("info", logging.INFO, "step", {"worker": index, "pad": "x" * 3000})
                get_logger("t").info("step", worker=index, step=step)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 8 * 200
    assert sorted(line["worker"] for line in lines) == sorted(list(range(8)) * 200)


@pytest.mark.parametrize(
    "event",
    [
        {"event": "plain", "n": 1, "who": "zoë"},
        {"event": "integer keys", 1: "one"},
        {"event": "beyond 64 bits", "n": 2**70},
        {"event": "an object", "thing": Redactor},
        {"event": "long", "note": "ü" * 2000},
    ],
    ids=["plain", "int keys", "big int", "object", "shortened"],
)
def test_the_renderers_bytes_are_its_text_encoded(event: dict[Any, Any]) -> None:
    from backend_kit._logging._render import JSONRenderer

    redactor = Redactor()
    renderer = JSONRenderer(lambda: redactor, max_bytes=1024)
    assert renderer.render_line(dict(event)) == (renderer.render(dict(event)) + "\n").encode()
