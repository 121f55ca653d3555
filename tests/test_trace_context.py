"""W3C trace context in: parsing, the request context, log lines, Sentry events and
OpenTelemetry's ids when its SDK runs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from backend_kit import configure_logging, current_trace, get_logger, load_settings
from backend_kit import request_context as open_context
from backend_kit._sentry import reset_sentry
from backend_kit._trace import child_traceparent, parse_traceparent, parse_tracestate
from backend_kit.flask import init_app

from .sentry_receiver import SentryReceiver, sentry_receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
VALID = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "00",
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper case is invalid
        f"00-{'0' * 32}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has no trailing fields
        f"00_{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID[:-1]}g-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-1",
        VALID + "\n",
        VALID + "x" * 300,
    ],
)
def test_invalid_traceparent_is_ignored(header: str) -> None:
    assert parse_traceparent(header) is None
    with open_context("r1", traceparent=header):
        trace = current_trace()
        assert trace is not None
        assert trace.trace_id != TRACE_ID
        assert trace.parent_span_id is None
        assert len(trace.trace_id) == 32
        assert len(trace.span_id) == 16


def test_valid_traceparent_is_continued_with_a_new_span() -> None:
    assert parse_traceparent(f"cc-{TRACE_ID}-{PARENT_ID}-01-future") == (TRACE_ID, PARENT_ID, "01")
    with open_context("r1", traceparent=VALID, tracestate="vendor=abc, other=x y") as request_id:
        trace = current_trace()
        assert trace is not None
        assert (trace.trace_id, trace.parent_span_id, trace.flags) == (TRACE_ID, PARENT_ID, "01")
        assert trace.span_id != PARENT_ID
        assert trace.tracestate == "vendor=abc,other=x y"
        assert request_id == "r1"
        child = parse_traceparent(child_traceparent(trace))
        assert child is not None
        assert child[0] == TRACE_ID
        assert child[1] not in (PARENT_ID, trace.span_id)


@pytest.mark.parametrize(
    "tracestate",
    [
        "UPPER=1",
        "k=v,k=w",  # duplicate key
        "k=",
        "k=a,b",
        ",".join(f"k{i}=v" for i in range(33)),
        "k=" + "v" * 600,
    ],
)
def test_invalid_tracestate_is_dropped_whole(tracestate: str) -> None:
    assert parse_tracestate(tracestate) == ""


def test_parsing_is_linear_on_adversarial_headers() -> None:
    # Inputs far over the caps and shaped to hurt a backtracking pattern: all cheap.
    hostile = ["a" * 100_000, "a=" + "b" * 100_000, ("a" * 250 + "@") * 400, "-" * 100_000]
    started = time.perf_counter()
    for header in hostile:
        for _ in range(100):
            parse_traceparent(header)
            parse_tracestate(header)
    assert time.perf_counter() - started < 2.0  # a generous bound on a loaded machine


@given(st.text(max_size=600))
def test_any_header_gives_a_valid_trace(header: str) -> None:
    with open_context(traceparent=header, tracestate=header):
        trace = current_trace()
        assert trace is not None
        assert parse_traceparent(child_traceparent(trace)) is not None
        assert len(trace.tracestate) <= 512


def _flask_app(stream: io.StringIO, **settings: object) -> Flask:
    app = Flask("svc")
    log = get_logger("svc")

    @app.get("/work")
    def work() -> str:
        log.info("working")
        return "ok"

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    values = {"service_name": "svc", "environment": "test", **settings}
    init_app(app, settings=load_settings(**values))
    configure_logging(load_settings(**values), format="json", stream=stream)
    return app


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_log_line_of_a_request_carries_its_trace() -> None:
    stream = io.StringIO()
    app = _flask_app(stream)
    client = app.test_client()
    client.get("/work", headers={"traceparent": VALID, "X-Request-ID": "req-a"})
    client.get("/work", headers={"traceparent": "garbage"})
    lines = _lines(stream)
    assert [line["event"] for line in lines] == ["working", "request_finished"] * 2
    first, second = lines[:2], lines[2:]
    for line in first:
        assert line["trace_id"] == TRACE_ID
        assert line["request_id"] == "req-a"
    assert first[0]["span_id"] == first[1]["span_id"] != PARENT_ID
    assert second[0]["trace_id"] == second[1]["trace_id"] != TRACE_ID
    assert len(str(second[0]["trace_id"])) == 32


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with sentry_receiver() as running:
        yield running
    reset_sentry(timeout=0)


@pytest.mark.parametrize("traces_sample_rate", [0.0, 1.0])
def test_sentry_event_continues_the_inbound_trace(
    receiver: SentryReceiver, traces_sample_rate: float
) -> None:
    stream = io.StringIO()
    app = _flask_app(stream, sentry_dsn=receiver.dsn, sentry_traces_sample_rate=traces_sample_rate)
    app.test_client().get("/boom", headers={"traceparent": VALID})
    expected = 2 if traces_sample_rate else 1
    receiver.wait_for(lambda r: len(r.events) + len(r.transactions) >= expected)
    time.sleep(0.2)  # anything sent late would still be counted below
    assert len(receiver.events) == 1
    assert len(receiver.transactions) == expected - 1
    event = receiver.events[0]
    assert event["contexts"]["trace"]["trace_id"] == TRACE_ID
    for transaction in receiver.transactions:
        assert transaction["contexts"]["trace"]["trace_id"] == TRACE_ID
    finished = [line for line in _lines(stream) if line["event"] == "request_finished"]
    assert len(finished) == 1
    assert finished[0]["trace_id"] == TRACE_ID


def test_opentelemetry_is_never_imported_without_the_application() -> None:
    code = (
        "import sys, io, backend_kit\n"
        "from backend_kit import http\n"
        "backend_kit.configure_logging(backend_kit.load_settings(), stream=io.StringIO())\n"
        "with backend_kit.request_context(traceparent='x'):\n"
        "    backend_kit.get_logger('t').info('line')\n"
        "    http._outbound_headers()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_opentelemetry_span_ids_win_in_log_lines() -> None:
    # In a subprocess: OpenTelemetry's global tracer provider can be set once per process.
    code = """
import io, json
from flask import Flask
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from backend_kit import configure_logging, get_logger, load_settings
from backend_kit.flask import init_app

trace.set_tracer_provider(TracerProvider())
app = Flask("svc")
seen = {}

@app.get("/work")
def work():
    context = trace.get_current_span().get_span_context()
    seen["ids"] = (format(context.trace_id, "032x"), format(context.span_id, "016x"))
    get_logger("svc").info("working")
    return "ok"

init_app(app, settings=load_settings(service_name="svc"))
FlaskInstrumentor().instrument_app(app)
stream = io.StringIO()
configure_logging(load_settings(service_name="svc"), format="json", stream=stream)
app.test_client().get(
    "/work", headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
)
lines = [json.loads(line) for line in stream.getvalue().splitlines()]
print(json.dumps({"seen": seen["ids"], "lines": lines}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(result.stdout)
    trace_id, span_id = report["seen"]
    assert trace_id == TRACE_ID  # OpenTelemetry continued the inbound trace
    lines = report["lines"]
    assert [line["event"] for line in lines] == ["working", "request_finished"]
    assert lines[0]["trace_id"] == trace_id
    assert lines[0]["span_id"] == span_id
    assert lines[1]["trace_id"] == trace_id


def test_opentelemetry_imported_without_a_span_keeps_backend_kits_own_trace() -> None:
    # redis-py 8 imports OpenTelemetry whenever its SDK is installed: imported is not
    # running. Without an active span, each block gets its own fresh ids, made ahead in
    # batches (one os.urandom call for many blocks); with a span, the span's ids win.
    code = """
import json, os
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from backend_kit import current_trace, request_context

trace.set_tracer_provider(TracerProvider())
calls = []
real_urandom = os.urandom
os.urandom = lambda size: calls.append(size) or real_urandom(size)
traces = []
for _ in range(20):
    with request_context() as request_id:
        traces.append((request_id, current_trace().trace_id, current_trace().span_id))
os.urandom = real_urandom
with trace.get_tracer("t").start_as_current_span("work") as span:
    with request_context():
        inside = current_trace().trace_id
    expected = format(span.get_span_context().trace_id, "032x")
print(json.dumps({"traces": traces, "urandom_calls": len(calls), "inside": inside,
                  "expected": expected}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    report = json.loads(result.stdout)
    traces = report["traces"]
    assert len({trace_id for _, trace_id, _ in traces}) == 20  # a new trace per block
    assert len({request_id for request_id, _, _ in traces}) == 20
    assert all(len(trace_id) == 32 and len(span_id) == 16 for _, trace_id, span_id in traces)
    assert report["urandom_calls"] <= 1  # the batch made ahead, not two calls per block
    assert report["inside"] == report["expected"]


def test_task_messages_carry_the_trace() -> None:
    from backend_kit.context import extract_context, inject_context

    with open_context("publisher", traceparent=VALID, tracestate="vendor=abc"):
        headers = inject_context({})
        publisher = current_trace()
    assert publisher is not None
    values = extract_context(headers)
    with open_context(values.pop("request_id"), **values) as request_id:
        task = current_trace()
    assert request_id == "publisher"
    assert task is not None
    assert task.trace_id == TRACE_ID
    assert task.tracestate == "vendor=abc"
    assert task.parent_span_id not in (None, publisher.span_id)
