"""Sentry through sentry-sdk's real HTTP transport into a local envelope receiver."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

import backend_kit
from backend_kit import (
    configure_logging,
    configure_sentry,
    get_logger,
    load_settings,
    request_context,
)
from backend_kit._redact import Redactor
from backend_kit._sentry import is_sentry_configured, reset_sentry
from backend_kit.testing import capture_logs, capture_sentry_events

from .sentry_receiver import SentryReceiver, sentry_receiver
from .servers import silent_tcp_server


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with sentry_receiver() as running:
        yield running
    reset_sentry(timeout=0)


def _start(receiver: SentryReceiver, **settings: Any) -> None:
    values: dict[str, Any] = {
        "sentry_dsn": receiver.dsn,
        "environment": "staging",
        "release": "2.3.4",
    }
    values.update(settings)
    active = load_settings(**values)
    backend_kit.configure(active)
    # Keep test output quiet: log lines go to a buffer, not stdout.
    configure_logging(active, format="json", stream=io.StringIO())


def _messages(events: list[dict[str, Any]]) -> list[str]:
    return [event.get("logentry", {}).get("message") for event in events]


def test_without_a_dsn_nothing_happens_and_sentry_sdk_is_not_imported() -> None:
    script = (
        "import sys, backend_kit\n"
        "backend_kit.configure()\n"
        "assert backend_kit.configure_sentry() is False\n"
        "backend_kit.get_logger('x').error('no sentry')\n"
        "print('sentry_sdk' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "LOG_FORMAT": "json"}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip().splitlines()[-1] == "False"
    assert not is_sentry_configured()


def test_error_log_becomes_one_event_with_fields_tags_and_breadcrumbs(
    receiver: SentryReceiver,
) -> None:
    _start(receiver)
    log = get_logger("payments")
    with request_context("req-42", customer="c-1"):
        log.info("cart_loaded", items=3)
        logging.getLogger("urllib3").warning("retrying connection")
        log.error("payment_failed", order_id=7, amount=12.5)
    receiver.wait_for(lambda r: len(r.events) >= 1)
    reset_sentry(timeout=5)
    (event,) = receiver.events
    assert event["level"] == "error"
    assert event["logger"] == "payments"
    assert event["logentry"]["message"] == "payment_failed"
    assert event["extra"]["order_id"] == 7
    assert event["extra"]["amount"] == 12.5
    assert event["extra"]["customer"] == "c-1"
    assert event["tags"]["request_id"] == "req-42"
    assert event["environment"] == "staging"
    assert event["release"] == "2.3.4"
    crumbs = event["breadcrumbs"]["values"]
    assert [(c["category"], c["message"], c["level"]) for c in crumbs] == [
        ("payments", "cart_loaded", "info"),
        ("urllib3", "retrying connection", "warning"),
    ]
    assert crumbs[0]["data"]["items"] == 3


def test_critical_is_fatal_and_info_is_never_an_event(receiver: SentryReceiver) -> None:
    _start(receiver)
    log = get_logger("x")
    log.info("just info")
    log.warning("just a warning")
    log.critical("disk full")
    receiver.wait_for(lambda r: len(r.events) >= 1)
    reset_sentry(timeout=5)
    assert [(e["level"], e["logentry"]["message"]) for e in receiver.events] == [
        ("fatal", "disk full")
    ]


def test_an_error_logged_and_reraised_is_reported_once(receiver: SentryReceiver) -> None:
    import sentry_sdk

    _start(receiver)
    log = get_logger("orders")
    try:
        try:
            raise LookupError("order 7 missing")
        except LookupError:
            log.exception("lookup_failed", order_id=7)
            raise
    except LookupError as exc:
        sentry_sdk.capture_exception(exc)  # what a framework integration does next
    logging.getLogger("django.request").error("stdlib error without exception")
    receiver.wait_for(lambda r: len(r.events) >= 2)
    reset_sentry(timeout=5)
    events = receiver.events
    assert _messages(events) == ["lookup_failed", "stdlib error without exception"]
    (exception,) = events[0]["exception"]["values"]
    assert exception["type"] == "LookupError"
    assert exception["value"] == "order 7 missing"
    assert exception["mechanism"]["handled"] is True
    assert events[0]["extra"]["order_id"] == 7


def test_stdlib_logging_integration_does_not_duplicate(receiver: SentryReceiver) -> None:
    _start(receiver)
    try:
        raise KeyError("k")
    except KeyError:
        logging.getLogger("werkzeug").exception("Exception on /orders [GET]")
    receiver.wait_for(lambda r: len(r.events) >= 1)
    reset_sentry(timeout=5)
    assert _messages(receiver.events) == ["Exception on /orders [GET]"]


def test_send_default_pii_is_off_and_frames_have_no_locals(receiver: SentryReceiver) -> None:
    import sentry_sdk

    _start(receiver)
    assert not sentry_sdk.get_client().should_send_default_pii()
    assert sentry_sdk.get_client().options["include_local_variables"] is False

    def fail() -> None:
        # Built at run time so the value is not in the source context Sentry sends.
        innocent_name = "-".join(("canary", "local", "value"))  # noqa: F841 - must not be sent
        raise RuntimeError("x")

    try:
        fail()
    except RuntimeError:
        get_logger("x").exception("failed")
    receiver.wait_for(lambda r: len(r.events) >= 1)
    reset_sentry(timeout=5)
    frames = receiver.events[0]["exception"]["values"][0]["stacktrace"]["frames"]
    assert all("vars" not in frame for frame in frames)
    assert b"canary-local-value" not in b"".join(receiver.raw_bodies)


def test_locals_when_turned_on_are_redacted(receiver: SentryReceiver) -> None:
    _start(receiver, log_traceback_locals=True)

    def fail() -> None:
        db_password = "-".join(("canary", "local", "pw"))  # noqa: F841 - must be masked
        raise RuntimeError("x")

    try:
        fail()
    except RuntimeError:
        get_logger("x").exception("failed")
    receiver.wait_for(lambda r: len(r.events) >= 1)
    reset_sentry(timeout=5)
    frames = receiver.events[0]["exception"]["values"][0]["stacktrace"]["frames"]
    assert frames[-1]["vars"]["db_password"] == "***"
    assert b"canary-local-pw" not in b"".join(receiver.raw_bodies)


def test_transactions_are_tagged_and_health_paths_are_never_traced(
    receiver: SentryReceiver,
) -> None:
    flask = pytest.importorskip("flask")
    _start(receiver, sentry_traces_sample_rate=1.0)
    app = flask.Flask("traced")

    @app.route("/orders")
    def orders() -> str:
        with request_context(flask.request.headers.get("X-Request-ID")):
            get_logger("orders").info("listing")
            return "ok"

    @app.route("/healthz")
    @app.route("/livez")
    @app.route("/readyz/")
    def health() -> str:
        with request_context(flask.request.headers.get("X-Request-ID")):
            return "ok"

    client = app.test_client()
    for path in ("/healthz", "/livez", "/readyz/", "/orders"):
        assert (
            client.get(path, headers={"X-Request-ID": f"rid{path.replace('/', '-')}"}).status_code
            == 200
        )
    receiver.wait_for(lambda r: len(r.transactions) >= 1)
    reset_sentry(timeout=5)
    (transaction,) = receiver.transactions
    assert transaction["transaction"] == "orders"
    assert transaction["tags"]["request_id"] == "rid-orders"
    assert transaction["environment"] == "staging"


def test_exception_escaping_the_request_context_keeps_its_request_id(
    receiver: SentryReceiver,
) -> None:
    flask = pytest.importorskip("flask")
    _start(receiver)
    app = flask.Flask("failing")

    @app.route("/boom")
    def boom() -> str:
        with request_context("rid-escaped"):
            raise RuntimeError("unhandled in view")

    assert app.test_client().get("/boom").status_code == 500
    receiver.wait_for(lambda r: any("exception" in e for e in r.events))
    reset_sentry(timeout=5)
    reported = [e for e in receiver.events if "exception" in e]
    assert len(reported) == 1  # Flask's own error log and the integration: one report
    assert reported[0]["tags"]["request_id"] == "rid-escaped"


def test_excluded_paths_follow_the_health_prefix_and_the_settings(
    receiver: SentryReceiver,
) -> None:
    import sentry_sdk

    _start(
        receiver,
        sentry_traces_sample_rate=1.0,
        sentry_traces_exclude_paths="/ping,/status",
        health_path_prefix="/ops",
    )
    sampled = {}
    for path in ("/ping", "/ops/healthz", "/ops/readyz", "/healthz", "/orders"):
        with sentry_sdk.start_transaction(name=f"GET {path}", op="http.server") as transaction:
            pass
        sampled[path] = transaction.sampled
    assert sampled == {
        "/ping": False,
        "/ops/healthz": False,
        "/ops/readyz": False,
        "/healthz": True,  # not a health endpoint under this prefix
        "/orders": True,
    }


def test_redaction_failure_drops_the_event_with_a_local_warning(
    receiver: SentryReceiver, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sentry_sdk

    _start(receiver)

    def broken(self: Redactor, value: Any, **options: Any) -> Any:
        raise RuntimeError("policy bug")

    monkeypatch.setattr(Redactor, "redact_for_output", broken)
    sentry_sdk.capture_message("secret-canary-message")
    monkeypatch.undo()
    sentry_sdk.capture_message("after the fix")
    receiver.wait_for(lambda r: len(r.events) >= 1)
    reset_sentry(timeout=5)
    assert _messages(receiver.events) == [None]
    assert receiver.events[0]["message"] == "after the fix"
    assert b"secret-canary-message" not in b"".join(receiver.raw_bodies)
    assert "dropped a Sentry event because the redaction policy raised RuntimeError" in (
        capsys.readouterr().err
    )


def test_unreachable_sentry_never_slows_logging_and_shutdown_is_bounded() -> None:
    with silent_tcp_server() as port:
        settings = load_settings(sentry_dsn=f"http://publickey@127.0.0.1:{port}/1")
        configure_logging(settings, format="json", stream=io.StringIO())
        assert configure_sentry(settings, shutdown_timeout=1.0)
        log = get_logger("x")
        started = time.monotonic()
        for index in range(50):
            log.error("unreachable", index=index)
        logging_took = time.monotonic() - started
        started = time.monotonic()
        reset_sentry()
        shutdown_took = time.monotonic() - started
    assert logging_took < 2.0  # each call only queues the event (microseconds each)
    assert shutdown_took < 8.0  # bounded by the 1 s shutdown timeout, with a wide margin


def test_configure_twice_and_reset(receiver: SentryReceiver) -> None:
    import sentry_sdk

    _start(receiver)
    _start(receiver, release="9.9.9")
    assert sentry_sdk.get_client().options["release"] == "9.9.9"
    get_logger("x").error("after reconfigure")
    receiver.wait_for(lambda r: len(r.events) >= 1)
    backend_kit._configure.reset()
    assert not is_sentry_configured()
    assert not sentry_sdk.get_client().is_active()
    get_logger("x").error("after reset")  # neither raises nor reaches Sentry
    assert _messages(receiver.events) == ["after reconfigure"]


def test_bad_shutdown_timeout_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="shutdown_timeout"):
        configure_sentry(load_settings(), shutdown_timeout=-1)


def test_capture_sentry_events_stub_transport() -> None:
    import sentry_sdk

    with capture_sentry_events() as sentry, capture_logs() as logs, request_context("stub-1"):
        get_logger("x").info("before", password="hunter2")
        get_logger("x").error("failed", api_key="k-123")
        with sentry_sdk.start_transaction(name="job"):
            pass
    assert not is_sentry_configured()
    (event,) = sentry.events
    assert event["extra"]["api_key"] == "***"
    assert event["tags"]["request_id"] == "stub-1"
    assert [c["message"] for c in sentry.breadcrumbs] == ["before"]
    assert sentry.breadcrumbs[0]["data"]["password"] == "***"
    assert sentry.transactions == []  # tracing is off by default
    assert [e["event"] for e in logs] == ["before", "failed"]


def test_capture_sentry_events_restores_the_previous_configuration(
    receiver: SentryReceiver,
) -> None:
    _start(receiver)
    with capture_sentry_events() as sentry:
        get_logger("x").error("captured")
    assert is_sentry_configured()
    get_logger("x").error("sent")
    receiver.wait_for(lambda r: len(r.events) >= 1)
    reset_sentry(timeout=5)
    assert _messages(sentry.events) == ["captured"]
    assert _messages(receiver.events) == ["sent"]
