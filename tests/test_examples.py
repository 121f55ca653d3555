"""The example services in ``examples/``, run under gunicorn and used over real HTTP.

Each example gets its own throwaway Redis (so it can be stopped), an SQLite file, and a
loopback exchange-rate service that fails on demand. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from .conftest import _SETTINGS_PREFIXES
from .servers import GunicornServer, RedisServer, gunicorn_server, redis_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 10.0  # seconds, for every HTTP call to the examples


# A loopback stand-in for the exchange-rate service the examples call.

RATES = {"USD": 1.0, "EUR": 0.5, "GBP": 0.25}


class RatesService:
    """Answers ``GET /rates`` with fixed rates, after failing the next *n* calls with 503."""

    def __init__(self) -> None:
        self.calls = 0
        self._failures_left = 0
        self._lock = threading.Lock()
        self.url = ""

    def fail_next(self, count: int) -> None:
        with self._lock:
            self._failures_left = count

    def answer(self) -> tuple[int, bytes]:
        with self._lock:
            self.calls += 1
            if self._failures_left > 0:
                self._failures_left -= 1
                return 503, b'{"error": "overloaded"}'
        return 200, orjson.dumps({"base": "USD", "rates": RATES})


@pytest.fixture(scope="module")
def rates_service() -> Iterator[RatesService]:
    service = RatesService()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = service.answer()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="rates-service", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# The examples under gunicorn.


@dataclass
class Service:
    """An example under gunicorn, used over HTTP."""

    name: str
    gunicorn: GunicornServer

    def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        """Status, headers (lower-case names) and the decoded JSON body (or None)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.gunicorn.port, timeout=TIMEOUT)
        try:
            payload = None if body is None else orjson.dumps(body)
            all_headers = {"Content-Type": "application/json"} if body is not None else {}
            all_headers.update(headers or {})
            connection.request(method, path, body=payload, headers=all_headers)
            response = connection.getresponse()
            raw = response.read()
            answer_headers = {name.lower(): value for name, value in response.getheaders()}
        finally:
            connection.close()
        try:
            decoded = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            decoded = None
        return response.status, answer_headers, decoded

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines the service printed so far (other lines are skipped)."""
        events = []
        for line in self.gunicorn.output().splitlines():
            if not line.startswith("{"):
                continue
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def wait_for_events(
        self, accept: Callable[[dict[str, Any]], bool], count: int
    ) -> list[dict[str, Any]]:
        """The accepted events once at least *count* were printed (lines can trail the
        response by a moment); fails after a generous deadline."""
        deadline = time.monotonic() + 10
        while True:
            found = [event for event in self.events() if accept(event)]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@dataclass
class RunningExample(Service):
    """An example wired to its own Redis and to the loopback rates service."""

    redis: RedisServer
    rates: RatesService


# Each example reads its settings with its own prefix, the standard variables included.
EXAMPLE_PREFIXES = ("CATALOG_", "SHOP_")


def prepare(command: tuple[str, ...], *, cwd: Path, env: dict[str, str]) -> None:
    """Run what an example needs before it serves (Django's migrations), if anything."""
    if not command:
        return
    prepared = subprocess.run(
        [sys.executable, *command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr


def _clean_env() -> dict[str, str]:
    """The test process's environment without any settings variable a developer (or CI,
    with DATABASE_URL) may have exported."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith((*_SETTINGS_PREFIXES, *EXAMPLE_PREFIXES))
    }


def _example_env(
    prefix: str, tmp: Path, redis: RedisServer, rates: RatesService, extra: dict[str, str]
) -> dict[str, str]:
    settings = {
        "ENVIRONMENT": "test",
        "LOG_FORMAT": "json",
        "CACHE_URL": redis.url,
        "CACHE_TIMEOUT": "0.5",
        "DATABASE_URL": f"sqlite:///{tmp / 'example.sqlite3'}",
        "HEALTH_CACHE_SECONDS": "0",
        "RATES_URL": rates.url,
        "RATES_TIMEOUT": "2",
        **extra,
    }
    (tmp / "secrets").mkdir(exist_ok=True)
    return {
        **_clean_env(),
        "PYTHONUNBUFFERED": "1",
        "BACKEND_KIT_SECRETS_DIR": str(tmp / "secrets"),
        **{f"{prefix}{name}": value for name, value in settings.items()},
    }


@dataclass(frozen=True)
class Example:
    folder: str
    wsgi: str
    prefix: str
    settings: dict[str, str]  # without the prefix
    process_env: dict[str, str] = field(default_factory=dict)
    prepare: tuple[str, ...] = ()  # a command run once before gunicorn starts


FLASK = Example("flask_app", "app:app", "CATALOG_", {"SERVICE_NAME": "catalog-flask"})
DJANGO = Example(
    "django_project",
    "shop.wsgi:application",
    "SHOP_",
    {"SERVICE_NAME": "catalog-django", "SECRET_KEY": "example-tests-only-0123456789"},
    # pytest-django exported the test project's module; the example names its own.
    process_env={"DJANGO_SETTINGS_MODULE": "shop.settings"},
    prepare=("manage.py", "migrate", "--noinput"),
)


@pytest.fixture(scope="module", params=[FLASK, DJANGO], ids=["flask", "django"])
def example(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    rates_service: RatesService,
) -> Iterator[RunningExample]:
    spec: Example = request.param
    tmp = tmp_path_factory.mktemp(spec.folder)
    cwd = EXAMPLES / spec.folder
    with redis_server() as redis:
        env = _example_env(spec.prefix, tmp, redis, rates_service, spec.settings)
        env.update(spec.process_env)
        prepare(spec.prepare, cwd=cwd, env=env)
        # Two workers: whichever serves the second price, the rates must come from Redis.
        with gunicorn_server(
            spec.wsgi, cwd=cwd, env=env, log_path=tmp / "gunicorn.log", workers=2
        ) as server:
            yield RunningExample(spec.folder, server, redis, rates_service)


def _finished(request_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: (
        event.get("event") == "request_finished" and event.get("request_id") == request_id
    )


# The tests. Each example is started once and shared by the tests below.


def test_products_are_stored_and_each_request_is_logged_once(example: RunningExample) -> None:
    sku = f"tea-{example.name}"
    product = {"sku": sku, "name": "Green tea", "price": 4.5}
    calls = [
        ("POST", "/products", product, 201),
        ("GET", f"/products/{sku}", None, 200),
        ("GET", "/products", None, 200),
        ("POST", "/products", product, 409),
        ("POST", "/products", {"sku": sku}, 400),
        ("GET", "/livez", None, 200),
        ("GET", "/products/missing", None, 404),
    ]
    for number, (method, path, body, expected) in enumerate(calls):
        request_id = f"{example.name}-store-{number}"
        status, headers, answer = example.request(
            method, path, body=body, headers={"X-Request-ID": request_id}
        )
        assert status == expected, (method, path, answer)
        assert headers["x-request-id"] == request_id
    status, _, answer = example.request("GET", f"/products/{sku}")
    assert answer == {
        "sku": sku,
        "name": "Green tea",
        "price": 4.5,
        "price_cents": 450,
        "currency": "USD",
    }
    status, _, listing = example.request("GET", "/products")
    assert sku in [item["sku"] for item in listing["products"]]

    routes = {"flask_app": "/products/<sku>", "django_project": "products/<str:sku>"}
    levels = {201: "info", 200: "info", 409: "warning", 400: "warning", 404: "warning"}
    for number, (method, path, _, expected) in enumerate(calls):
        if path == "/livez":
            continue  # health probes are logged at debug, below the default level
        request_id = f"{example.name}-store-{number}"
        finished = example.wait_for_events(_finished(request_id), 1)
        assert len(finished) == 1, f"{method} {path}: {finished}"
        event = finished[0]
        assert event["method"] == method
        assert event["path"] == path
        assert event["status"] == expected
        assert event["client"] == "127.0.0.1"
        assert isinstance(event["duration_ms"], float | int)
        assert event["service"] == f"catalog-{example.name.split('_')[0]}"
        assert event["level"] == levels[expected]
        if path == f"/products/{sku}":
            assert event["route"] == routes[example.name]
    # The probe's line would have come before the later requests' lines.
    livez_id = f"{example.name}-store-{[c[1] for c in calls].index('/livez')}"
    assert [e for e in example.events() if e.get("request_id") == livez_id] == []
    created = example.wait_for_events(lambda e: e.get("event") == "product_created", 1)
    assert [e["request_id"] for e in created] == [f"{example.name}-store-0"]


@pytest.mark.parametrize(
    "bad_id", ["x" * 4096, 'quote"d', "sp ace", "semi;colon"], ids=["4KB", "quote", "space", "semi"]
)
def test_a_bad_request_id_is_replaced(example: RunningExample, bad_id: str) -> None:
    status, headers, _ = example.request("GET", "/products", headers={"X-Request-ID": bad_id})
    request_id = headers["x-request-id"]
    assert status == 200
    assert request_id != bad_id
    assert len(request_id) == 32
    assert request_id.isalnum()
    finished = example.wait_for_events(_finished(request_id), 1)
    assert len(finished) == 1
    assert bad_id not in example.gunicorn.output()


def test_prices_retry_the_flaky_rates_service_then_come_from_the_cache(
    example: RunningExample,
) -> None:
    sku = f"kettle-{example.name}"
    status, _, _ = example.request(
        "POST", "/products", body={"sku": sku, "name": "Kettle", "price": 30}
    )
    assert status == 201
    calls_before = example.rates.calls
    example.rates.fail_next(2)

    first_id, second_id = f"{example.name}-price-1", f"{example.name}-price-2"
    status, headers, first = example.request(
        "GET", f"/products/{sku}/price?currency=EUR", headers={"X-Request-ID": first_id}
    )
    assert status == 200, first
    assert headers["x-request-id"] == first_id
    assert first["price"] == 15.0
    assert first["rate"] == 0.5
    assert example.rates.calls - calls_before == 3  # two 503s, then the answer

    retries = example.wait_for_events(lambda e: e.get("event") == "retry_scheduled", 2)
    assert [e["attempt"] for e in retries] == [1, 2]
    assert all(e["request_id"] == first_id for e in retries)
    assert all(e["level"] == "warning" for e in retries)
    assert all("503" in e["error"] for e in retries)

    status, _, second = example.request(
        "GET", f"/products/{sku}/price?currency=GBP", headers={"X-Request-ID": second_id}
    )
    assert status == 200, second
    assert second["price"] == 7.5
    # Served from the cache: the rates service was not called again and the rates are
    # the ones fetched for the first request.
    assert example.rates.calls - calls_before == 3
    assert second["rates_fetched_at"] == first["rates_fetched_at"]
    fetched = example.wait_for_events(lambda e: e.get("event") == "exchange_rates_fetched", 1)
    assert [e["request_id"] for e in fetched] == [first_id]
    assert len(example.wait_for_events(_finished(second_id), 1)) == 1


def _poll_ready(example: RunningExample, expected: int) -> tuple[int, int]:
    """Probe /readyz until it answers *expected*; returns (status, attempts)."""
    deadline = time.monotonic() + 20
    attempts = 0
    while True:
        attempts += 1
        status, _, _ = example.request("GET", "/readyz")
        if status == expected or time.monotonic() > deadline:
            return status, attempts
        time.sleep(0.1)


def test_readiness_follows_its_redis(example: RunningExample) -> None:
    assert _poll_ready(example, 200)[0] == 200
    example.redis.stop()
    try:
        status, attempts = _poll_ready(example, 503)
        assert status == 503, f"still {status} after {attempts} probes with Redis stopped"
        assert example.request("GET", "/livez")[0] == 200  # liveness runs no check
    finally:
        example.redis.start()
    status, attempts = _poll_ready(example, 200)
    assert status == 200, f"still {status} after {attempts} probes with Redis back"


BAD_JSON_BODIES = {
    "malformed": (b'{"sku": "tea-1", ', "unexpected end of data"),
    "100k deep": (b"[" * 100_000 + b"]" * 100_000, "depth limit exceeded"),
    "1e400": (b'{"sku": "tea-big", "name": "Tea", "price": 1e400}', "infinity"),
    "NaN": (b'{"sku": "tea-nan", "name": "Tea", "price": NaN}', "expected a JSON value"),
}


@pytest.mark.parametrize("case", list(BAD_JSON_BODIES))
def test_bad_json_gets_400_with_a_clear_message(example: RunningExample, case: str) -> None:
    body, reason = BAD_JSON_BODIES[case]
    connection = http.client.HTTPConnection("127.0.0.1", example.gunicorn.port, timeout=TIMEOUT)
    try:
        connection.request(
            "POST", "/products", body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        status, answer = response.status, orjson.loads(response.read())
    finally:
        connection.close()
    assert status == 400
    assert answer["error"].startswith("the request body is not valid JSON (")
    assert reason in answer["error"]
    assert answer["error"].endswith(
        "send a JSON object with finite numbers and at most 1024 levels of nesting"
    )


def test_a_price_too_large_to_store_gets_400(example: RunningExample) -> None:
    product = {"sku": f"tea-huge-{example.name}", "name": "Tea", "price": 1e300}
    status, _, answer = example.request("POST", "/products", body=product)
    assert (status, answer) == (
        400,
        {"error": "price must be a number from 0 to 1000000000 (US dollars)"},
    )


def test_the_flask_example_runs_on_embedded_defaults(tmp_path: Path) -> None:
    """What ``make demo`` runs: no Redis, no rates service, no network; only a database file."""
    env = {
        **_clean_env(),
        "PYTHONUNBUFFERED": "1",
        "BACKEND_KIT_SECRETS_DIR": str(tmp_path),
        "CATALOG_ENVIRONMENT": "development",
        "CATALOG_LOG_FORMAT": "json",
        "CATALOG_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
    }
    with gunicorn_server(
        "app:app", cwd=EXAMPLES / "flask_app", env=env, log_path=tmp_path / "gunicorn.log"
    ) as server:
        demo = Service("flask_app", server)
        assert demo.request("GET", "/")[0] == 200
        product = {"sku": "tea", "name": "Tea", "price": 2}
        assert demo.request("POST", "/products", body=product)[0] == 201
        status, _, first = demo.request("GET", "/products/tea/price?currency=EUR")
        assert status == 200, first
        status, _, second = demo.request("GET", "/products/tea/price?currency=GBP")
        assert status == 200, second
        assert second["rates_fetched_at"] == first["rates_fetched_at"]  # the memory cache
        # The offline rates fail once per fetch, so the demo shows a retry.
        assert len(demo.wait_for_events(lambda e: e.get("event") == "retry_scheduled", 1)) == 1
        status, _, report = demo.request("GET", "/healthz")  # no token needed in development
        assert status == 200, report
        assert report["status"] == "pass"
        assert "sqlite:responseTime" in report["checks"]


def test_the_django_example_hands_work_to_its_celery_worker(
    tmp_path: Path, rates_service: RatesService
) -> None:
    """A product created over HTTP is indexed by the example's worker, whose JSON lines
    carry the id of the request that published the task."""
    cwd = EXAMPLES / "django_project"
    with redis_server() as redis:
        env = _example_env(
            "SHOP_",
            tmp_path,
            redis,
            rates_service,
            {**DJANGO.settings, "CELERY_BROKER_URL": redis.url, "CELERY_QUEUE": "shop-test"},
        )
        env.update(DJANGO.process_env)
        prepare(DJANGO.prepare, cwd=cwd, env=env)
        worker_log = tmp_path / "worker.log"
        with worker_log.open("w") as output:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "shop", "--quiet", "worker",
                 "--pool", "solo", "--without-gossip", "--without-mingle"],
                cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            with gunicorn_server(
                DJANGO.wsgi, cwd=cwd, env=env, log_path=tmp_path / "gunicorn.log"
            ) as server:
                shop = Service("django_project", server)
                product = {"sku": "mate", "name": "Mate", "price": 3}
                status, _, answer = shop.request(
                    "POST", "/products", body=product, headers={"X-Request-ID": "shop-task-1"}
                )
                assert status == 201, answer
                deadline = time.monotonic() + 30
                finished: list[dict[str, Any]] = []
                while not finished and time.monotonic() < deadline:
                    time.sleep(0.1)
                    lines = [
                        orjson.loads(line)
                        for line in worker_log.read_text().splitlines()
                        if line.startswith("{")
                    ]
                    finished = [e for e in lines if e["event"] == "task_finished"]
                assert finished, worker_log.read_text()
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    (indexed,) = [e for e in lines if e["event"] == "product_indexed"]
    assert (indexed["sku"], indexed["known"], indexed["request_id"]) == (
        "mate",
        True,
        "shop-task-1",
    )
    assert indexed["task_name"] == "catalog.index_product"
    assert finished[0]["state"] == "success"
    assert finished[0]["task_id"] == indexed["task_id"]
    assert finished[0]["service"] == "catalog-django"
