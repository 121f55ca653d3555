"""What a Django request sends to Sentry, through the real sentry-sdk transport into a
local receiver: one event per failure, and no personal data by default. Every envelope
the receiver got is counted, whatever it holds."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from backend_kit import load_settings
from backend_kit._sentry import reset_sentry
from backend_kit.django._state import setup
from tests.django_project.service import ServiceSettings

from .sentry_receiver import SentryReceiver, parse_envelope, sentry_receiver
from .servers import gunicorn_server

PROJECT_ROOT = Path(__file__).resolve().parent.parent

EMAIL = "ann.canary@example.com"


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with sentry_receiver() as running:
        yield running
    reset_sentry(timeout=0)
    setup()  # back to the project's settings, without Sentry


def _envelopes(receiver: SentryReceiver) -> Counter[str]:
    counts: Counter[str] = Counter()
    for body in receiver.raw_bodies:
        for item in parse_envelope(body):
            counts[item.type] += 1
    return counts


def test_django_one_event_per_failure_and_no_personal_data(receiver: SentryReceiver) -> None:
    import sentry_sdk

    setup(load_settings(ServiceSettings, sentry_dsn=receiver.dsn, environment="test"))
    client = Client(raise_request_exception=False)
    # A WSGI server gives each request its own isolation scope; the test client does not,
    # and sentry-sdk would keep each request's event processor on the shared one.
    with sentry_sdk.isolation_scope():
        _requests(client)
    reset_sentry(timeout=5)
    _assert_one_event_per_failure(receiver)


def _requests(client: Client) -> None:
    assert client.get("/boom").status_code == 500
    assert client.get("/unavailable").status_code == 503
    response = client.post(
        f"/signup?email={EMAIL}&plan=pro",
        data=b'{"card": "4111 1111 1111 1111"}',
        content_type="application/json",
        headers={"Authorization": "Bearer tok-canary-9", "Cookie": "sessionid=ck-canary-7"},
        REMOTE_ADDR="203.0.113.77",
    )
    assert response.status_code == 500
    assert client.get("/hello/ann").status_code == 200


def _assert_one_event_per_failure(receiver: SentryReceiver) -> None:
    counts = _envelopes(receiver)
    # Two requests raised: two events. Django's "Service Unavailable" line for the 503
    # answered on purpose, and the request_finished lines, are none.
    assert counts["event"] == 2, counts
    assert set(counts) <= {"event", "sessions", "client_report"}, counts
    events = receiver.events
    assert sorted(e["exception"]["values"][-1]["type"] for e in events) == [
        "RuntimeError",
        "ValueError",
    ]
    (signup,) = [e for e in events if e["exception"]["values"][-1]["type"] == "ValueError"]
    sent = signup["request"]
    assert "data" not in sent
    assert "cookies" not in sent
    # Django's test client is no WSGI server: sentry-sdk leaves most request fields out.
    assert sent.get("query_string", "email=***&plan=***") == "email=***&plan=***"
    assert {name.lower() for name in sent.get("headers", {})}.isdisjoint(
        {"authorization", "cookie"}
    )
    assert "user" not in signup
    everything = b"".join(receiver.raw_bodies).decode("utf-8", "replace")
    for personal in (EMAIL, "4111 1111 1111 1111", "tok-canary-9", "ck-canary-7", "203.0.113.77"):
        assert personal not in everything


def test_django_under_gunicorn_sends_no_personal_data(
    receiver: SentryReceiver, tmp_path: Path
) -> None:
    """Through a real WSGI server, where sentry-sdk fills in the whole request."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_KIT_", "SENTRY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="tests.django_project.settings",
        SENTRY_DSN=receiver.dsn,
        ENVIRONMENT="test",
        LOG_FORMAT="json",
    )
    with gunicorn_server(
        "django.core.wsgi:get_wsgi_application()",
        cwd=PROJECT_ROOT,
        env=env,
        log_path=tmp_path / "gunicorn.log",
    ) as server:
        statuses = []
        for method, path, body in (
            ("GET", "/boom", None),
            ("GET", "/unavailable", None),
            ("POST", f"/signup?email={EMAIL}&plan=pro", b'{"card": "4111 1111 1111 1111"}'),
            ("GET", "/hello/ann", None),
        ):
            request = urllib.request.Request(  # noqa: S310 - the local gunicorn
                server.url + path,
                data=body,
                method=method,
                headers={
                    "Content-Type": "application/json",
                    "Authorization": "Bearer tok-canary-9",
                    "Cookie": "sessionid=ck-canary-7",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    statuses.append(response.status)
            except urllib.error.HTTPError as error:
                statuses.append(error.code)
                error.close()
    # gunicorn stopped: the worker flushed its queue to the receiver on the way out.
    assert statuses == [500, 503, 500, 200]
    receiver.wait_for(lambda r: len(r.events) >= 2, timeout=15)
    _assert_one_event_per_failure(receiver)
    (signup,) = [e for e in receiver.events if e["exception"]["values"][-1]["type"] == "ValueError"]
    assert signup["request"]["query_string"] == "email=***&plan=***"
    assert signup["request"]["method"] == "POST"
