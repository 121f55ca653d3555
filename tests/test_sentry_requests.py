"""What a request sends to Sentry, through the real sentry-sdk transport into a local
receiver: one event per failure, and no personal data unless asked for.

Every envelope the receiver got is counted, whatever it holds."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from flask import Flask, request

from backend_kit import configure_logging, load_settings
from backend_kit._sentry import reset_sentry
from backend_kit.flask import init_app

from .sentry_receiver import SentryReceiver, sentry_receiver

CARD = "4111 1111 1111 1111"
EMAIL = "ann.canary@example.com"
BODY = {"card": CARD, "pin": "1234", "items": [{"password": "pw-canary-1"}]}


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with sentry_receiver() as running:
        yield running
    reset_sentry(timeout=0)


def make_flask_app(receiver: SentryReceiver, **settings: Any) -> Flask:
    app = Flask("svc")

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("boom")

    @app.get("/unavailable")
    def unavailable() -> tuple[str, int]:
        return "down for maintenance", 503

    @app.post("/signup")
    def signup() -> str:
        request.get_json()
        raise ValueError("signup failed")

    @app.get("/ok")
    def ok() -> str:
        return "ok"

    values: dict[str, Any] = {
        "service_name": "svc",
        "environment": "test",
        "sentry_dsn": receiver.dsn,
    }
    values.update(settings)
    init_app(app, settings=load_settings(**values))
    configure_logging(load_settings(**values), format="json", stream=io.StringIO())
    return app


def _envelopes(receiver: SentryReceiver) -> Counter[str]:
    """The item types of every envelope received, counted, nothing filtered out."""
    counts: Counter[str] = Counter()
    for body in receiver.raw_bodies:
        from .sentry_receiver import parse_envelope

        for item in parse_envelope(body):
            counts[item.type] += 1
    return counts


def _requests(app: Flask) -> None:
    client = app.test_client()
    assert client.get("/boom").status_code == 500
    assert client.get("/unavailable").status_code == 503
    response = client.post(
        f"/signup?email={EMAIL}&plan=pro",
        json=BODY,
        headers={"Authorization": "Bearer tok-canary-9", "Cookie": "sessionid=ck-canary-7"},
        environ_base={"REMOTE_ADDR": "203.0.113.77"},
    )
    assert response.status_code == 500
    assert client.get("/ok").status_code == 200


def test_flask_one_event_per_failure_and_no_personal_data(receiver: SentryReceiver) -> None:
    _requests(make_flask_app(receiver))
    reset_sentry(timeout=5)  # flushes everything queued
    counts = _envelopes(receiver)
    # Two requests raised: two events. The 503 answered on purpose and the 500s'
    # request_finished lines are none.
    assert counts["event"] == 2, counts
    assert set(counts) <= {"event", "sessions", "client_report"}, counts
    events = receiver.events
    assert sorted(e["exception"]["values"][-1]["type"] for e in events) == [
        "RuntimeError",
        "ValueError",
    ]
    assert not any(e.get("logentry", {}).get("message") == "request_finished" for e in events)
    (signup,) = [e for e in events if e["exception"]["values"][-1]["type"] == "ValueError"]
    sent = signup["request"]
    assert "data" not in sent
    assert "cookies" not in sent
    assert sent["query_string"] == "email=***&plan=***"
    assert {name.lower() for name in sent.get("headers", {})}.isdisjoint(
        {"authorization", "cookie"}
    )
    assert "env" not in sent
    assert "user" not in signup
    everything = b"".join(receiver.raw_bodies).decode("utf-8", "replace")
    for personal in (EMAIL, "4111 1111 1111 1111", "tok-canary-9", "ck-canary-7", "203.0.113.77"):
        assert personal not in everything


def test_flask_bodies_and_client_ip_when_asked(receiver: SentryReceiver) -> None:
    app = make_flask_app(receiver, sentry_send_request_bodies=True, sentry_send_client_ip=True)
    client = app.test_client()
    client.post(
        f"/signup?email={EMAIL}",
        json=BODY,
        headers={"Cookie": "sessionid=ck-canary-7"},
        environ_base={"REMOTE_ADDR": "203.0.113.77"},
    )
    client.post("/signup", json=[{"token": "tok-in-array"}, CARD])
    reset_sentry(timeout=5)
    counts = _envelopes(receiver)
    assert counts["event"] == 2, counts
    first, second = sorted(
        receiver.events, key=lambda e: isinstance(e["request"].get("data"), list)
    )
    assert first["request"]["data"] == {
        "card": "**** **** **** 1111",
        "pin": "1234",
        "items": [{"password": "***"}],
    }
    assert second["request"]["data"] == [{"token": "***"}, "**** **** **** 1111"]
    assert first["request"]["env"] == {"REMOTE_ADDR": "203.0.113.77"}
    everything = b"".join(receiver.raw_bodies).decode("utf-8", "replace")
    for personal in (EMAIL, "4111 1111 1111 1111", "ck-canary-7", "pw-canary-1", "tok-in-array"):
        assert personal not in everything
    assert orjson.loads(orjson.dumps(first["request"]["query_string"])) == "email=***"
