"""backend_kit.metrics: what moves, what is served to whom, and in which format;
through the Flask and Django test clients and a real gunicorn with recycled workers."""

from __future__ import annotations

import asyncio
import http.client
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from prometheus_client import REGISTRY
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families

import backend_kit
from backend_kit import load_settings
from backend_kit.flask import extension, init_app
from backend_kit.health import HealthCheck
from backend_kit.metrics import configure_metrics

from .servers import free_port, gunicorn_server

TOKEN = "scrape-" + "t" * 24
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
APP_DIR = Path(__file__).parent / "metrics_app"
CONFIG = ["-c", "python:backend_kit.gunicorn"]


def _service() -> str:
    # A service name of its own per test: the process-wide registry keeps its values.
    return "svc_" + uuid.uuid4().hex[:12]


def _flask_app(service: str, **settings: Any) -> Flask:
    app = Flask("metrics_test")

    @app.get("/items/<int:item>")
    def item(item: int) -> dict[str, int]:
        return {"item": item}

    values = {
        "metrics_enabled": True,
        "metrics_token": TOKEN,
        "environment": "production",
        "service_name": service,
        **settings,
    }
    return init_app(app, settings=load_settings(**values))


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _route_values(service: str) -> set[str]:
    return {
        sample.labels["route"]
        for family in REGISTRY.collect()
        if family.name == "http_server_requests"
        for sample in family.samples
        if sample.labels.get("service") == service
    }


# --- requests -----------------------------------------------------------------------


def test_requests_are_counted_by_method_route_template_and_status() -> None:
    service = _service()
    client = _flask_app(service).test_client()
    for number in range(7):
        assert client.get(f"/items/{number}").status_code == 200
    assert client.get("/nowhere").status_code == 404
    assert client.post("/items/1").status_code == 405
    assert client.get("/livez").status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200

    base = {"service": service}
    get = {**base, "method": "GET"}
    assert _value("http_server_requests_total", **get, route="/items/<int:item>", status="200") == 7
    assert _value("http_server_requests_total", **get, route="unmatched", status="404") == 1
    post = {**base, "method": "POST", "route": "unmatched", "status": "405"}
    assert _value("http_server_requests_total", **post) == 1
    assert _value("http_server_requests_total", **get, route="/livez", status="200") == 1
    # The scrape itself is not a request the service served.
    assert _route_values(service) == {"/items/<int:item>", "unmatched", "/livez"}
    histogram = {**get, "route": "/items/<int:item>", "status": "200"}
    assert _value("http_server_request_duration_seconds_count", **histogram) == 7


def test_ten_thousand_unmatched_paths_add_no_label_value_flask() -> None:
    service = _service()
    client = _flask_app(service).test_client()
    client.get("/items/1")
    before = _route_values(service)
    for number in range(10_000):
        assert client.get(f"/scan/{uuid.uuid4().hex}/{number}").status_code == 404
    assert _route_values(service) == before | {"unmatched"}
    labels = {"service": service, "method": "GET", "route": "unmatched", "status": "404"}
    assert _value("http_server_requests_total", **labels) == 10_000


def test_unknown_methods_share_one_label_value() -> None:
    service = _service()
    client = _flask_app(service).test_client()
    for method in ("BREW", "WHEN", "PROPFIND"):
        client.open("/items/1", method=method)
    methods = {
        sample.labels["method"]
        for family in REGISTRY.collect()
        if family.name == "http_server_requests"
        for sample in family.samples
        if sample.labels.get("service") == service
    }
    assert methods == {"_OTHER"}


def test_invented_methods_keep_the_recorder_bounded_and_every_request_counted() -> None:
    from backend_kit import _metric_hooks
    from backend_kit.metrics import _MAX_REQUEST_KEYS

    service = _service()
    configure_metrics(load_settings(metrics_enabled=True, service_name=service))
    recorder = _metric_hooks.recorder
    assert recorder is not None
    requests = _MAX_REQUEST_KEYS + 2_000
    for number in range(requests):
        recorder.request_finished(f"M{number}", None, 405, 0.001)
    recorder.request_finished("GET", "/items/<int:item>", 200, 0.001)
    # The per-key shortcut stops growing at its cap; past it, requests still count.
    assert len(recorder._request_updates) == _MAX_REQUEST_KEYS
    labels = {"service": service, "method": "_OTHER", "route": "unmatched", "status": "405"}
    assert _value("http_server_requests_total", **labels) == requests
    assert _value("http_server_request_duration_seconds_count", **labels) == requests
    get = {"service": service, "method": "GET", "route": "/items/<int:item>", "status": "200"}
    assert _value("http_server_requests_total", **get) == 1
    assert _route_values(service) == {"unmatched", "/items/<int:item>"}


def test_a_new_service_name_moves_later_requests_to_its_label() -> None:
    first, second = _service(), _service()
    client = _flask_app(first).test_client()
    client.get("/items/1")
    configure_metrics(load_settings(metrics_enabled=True, service_name=second))
    client.get("/items/2")
    labels = {"method": "GET", "route": "/items/<int:item>", "status": "200"}
    assert _value("http_server_requests_total", service=first, **labels) == 1
    assert _value("http_server_requests_total", service=second, **labels) == 1


# --- exposure -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer", TOKEN]
)
def test_wrong_or_missing_token_gets_401_and_no_metrics(authorization: str | None) -> None:
    client = _flask_app(_service()).test_client()
    client.get("/items/1")
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"http_server" not in response.data
    assert b"# TYPE" not in response.data
    assert TOKEN.encode() not in response.data


def test_without_a_token_metrics_are_served_in_development_only() -> None:
    production = _flask_app(_service(), metrics_token=None).test_client()
    assert production.get("/metrics").status_code == 401
    development = _flask_app(
        _service(), metrics_token=None, environment="development"
    ).test_client()
    assert development.get("/metrics").status_code == 200


def test_the_scrape_parses_in_both_formats() -> None:
    service = _service()
    client = _flask_app(service).test_client()
    client.get("/items/3")
    auth = {"Authorization": f"Bearer {TOKEN}"}

    text = client.get("/metrics", headers=auth)
    assert text.content_type.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(text.get_data(as_text=True))}

    scraped = client.get("/metrics", headers={**auth, "Accept": OPENMETRICS})
    assert scraped.content_type.startswith("application/openmetrics-text")
    body = scraped.get_data(as_text=True)
    assert body.endswith("# EOF\n")
    open_families = {f.name: f for f in openmetrics_parser.text_string_to_metric_families(body)}

    for parsed in (families, open_families):
        requests = parsed["http_server_requests"]
        assert requests.type == "counter"
        assert parsed["http_server_request_duration_seconds"].type == "histogram"
        ours = [
            s
            for s in requests.samples
            if s.name == "http_server_requests_total" and s.labels["service"] == service
        ]
        assert [(s.labels["route"], s.value) for s in ours] == [("/items/<int:item>", 1.0)]
        assert "process_cpu_seconds" in parsed or "process_cpu_seconds_total" in parsed


def test_metrics_path_stays_out_of_sentry_tracing_and_404s_when_disabled() -> None:
    settings = load_settings(metrics_enabled=True, metrics_path="/ops/metrics")
    from backend_kit.health import health_paths

    assert "/ops/metrics" in health_paths(settings).all()  # the traces_exclude_paths source
    app = Flask("off")
    init_app(app, settings=load_settings(environment="development"))
    assert app.test_client().get("/metrics").status_code == 404


def test_metrics_off_imports_nothing_and_records_nothing() -> None:
    script = (
        "import sys\n"
        "from flask import Flask\n"
        "from backend_kit import load_settings\n"
        "from backend_kit.flask import init_app\n"
        "from backend_kit import _metric_hooks\n"
        "app = init_app(Flask('x'), settings=load_settings())\n"
        "app.test_client().get('/livez')\n"
        "assert _metric_hooks.recorder is None\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
        "print('clean')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "clean"


# --- cache, retries, health, telemetry ------------------------------------------------


def _function_value(name: str, service: str, suffix: str) -> float:
    for family in REGISTRY.collect():
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == name
                and labels.get("service") == service
                and labels.get("function", "").endswith(suffix)
            ):
                return float(sample.value)
    return 0.0


def test_cache_metrics_move_as_calls_happen() -> None:
    service = _service()
    configure_metrics(load_settings(metrics_enabled=True, service_name=service))
    loads = []

    @backend_kit.cached(ttl=60, namespace="prices")
    def price(item: int) -> int:
        loads.append(item)
        if item < 0:
            raise ValueError("negative")
        return item * 10

    suffix = "price"
    assert price(1) == 10
    assert price(1) == 10
    assert price(1) == 10
    assert price(2) == 20
    with pytest.raises(ValueError, match="negative"):
        price(-1)
    read = _function_value
    assert read("backend_kit_cache_hits_total", service, suffix) == 2
    assert read("backend_kit_cache_misses_total", service, suffix) == 3
    assert read("backend_kit_cache_loads_total", service, suffix) == 3
    assert read("backend_kit_cache_load_errors_total", service, suffix) == 1
    info = price.cache_info()
    assert (info.hits, info.misses, info.loads, info.errors) == (2, 3, 3, 1)


def test_retry_metrics_count_attempts_and_give_ups_by_target() -> None:
    service = _service()
    configure_metrics(load_settings(metrics_enabled=True, service_name=service))
    failures = {"left": 0}

    @backend_kit.retry(on=ConnectionError, attempts=3, wait_initial=0, wait_max=0)
    def fetch() -> str:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("down")
        return "ok"

    fetch()  # no retry at all
    failures["left"] = 1
    fetch()  # one retry
    failures["left"] = 5
    with pytest.raises(ConnectionError):
        fetch()  # two retries, then it gives up

    def by_target(name: str) -> dict[str, float]:
        return {
            sample.labels["target"]: sample.value
            for family in REGISTRY.collect()
            for sample in family.samples
            if sample.name == name and sample.labels.get("service") == service
        }

    attempts = by_target("backend_kit_retry_attempts_total")
    give_ups = by_target("backend_kit_retry_give_ups_total")
    assert list(attempts.values()) == [3.0]
    assert next(iter(attempts)).endswith("fetch")
    assert give_ups == {next(iter(attempts)): 1.0}


def test_health_metrics_follow_each_check_run() -> None:
    service = _service()
    app = _flask_app(service, health_cache_seconds=0)
    healthy = {"ok": True}

    def database() -> None:
        if not healthy["ok"]:
            raise ConnectionError("refused")

    extension(app).health.add(HealthCheck(name="db", run=database))
    client = app.test_client()
    labels = {"service": service, "check": "db"}
    assert client.get("/readyz").status_code == 200
    assert _value("backend_kit_health_check_up", **labels) == 1.0
    healthy["ok"] = False
    assert client.get("/readyz").status_code == 503
    assert _value("backend_kit_health_check_up", **labels) == 0.0
    runs = {"service": service, "check": "db"}
    passed = _value("backend_kit_health_check_duration_seconds_count", **runs, status="pass")
    failed = _value("backend_kit_health_check_duration_seconds_count", **runs, status="fail")
    assert (passed, failed) == (1.0, 1.0)


def test_breaker_and_budget_hooks_record_through_the_recorder() -> None:
    from backend_kit import _metric_hooks

    service = _service()
    configure_metrics(load_settings(metrics_enabled=True, service_name=service))
    recorder = _metric_hooks.recorder
    assert recorder is not None
    recorder.breaker_transition("payments", "closed", "open")
    recorder.retry_budget_refused("payments")
    base = {"service": service, "breaker": "payments"}
    assert _value("backend_kit_circuit_breaker_state", **base) == 2.0
    moved = {**base, "from_state": "closed", "to_state": "open"}
    assert _value("backend_kit_circuit_breaker_transitions_total", **moved) == 1.0
    refused = {"service": service, "target": "payments"}
    assert _value("backend_kit_retry_budget_refusals_total", **refused) == 1.0


def test_a_real_circuit_breaker_and_retry_budget_report_their_metrics() -> None:
    from backend_kit import CircuitOpenError, circuit_breaker
    from backend_kit.http import RetryBudget

    service = _service()
    configure_metrics(load_settings(metrics_enabled=True, service_name=service))
    breaker = circuit_breaker(f"payments-{service}", failures=2, recovery_timeout=60)

    def failing() -> None:
        raise ConnectionError("refused")

    for _ in range(2):
        with pytest.raises(ConnectionError), breaker:
            failing()
    with pytest.raises(CircuitOpenError), breaker:
        failing()
    base = {"service": service, "breaker": breaker.name}
    assert _value("backend_kit_circuit_breaker_state", **base) == 2.0  # open
    moved = {**base, "from_state": "closed", "to_state": "open"}
    assert _value("backend_kit_circuit_breaker_transitions_total", **moved) == 1.0

    budget = RetryBudget("rates.example", ratio=0.0, window=60.0)
    spent = [budget.try_spend() for _ in range(5)]
    assert spent.count(False) == 2  # the floor of three retries, then refusals
    refused = {"service": service, "target": "rates.example"}
    assert _value("backend_kit_retry_budget_refusals_total", **refused) == 2.0


def test_dropped_log_lines_are_counted() -> None:
    from backend_kit._logging import _sink

    service = _service()
    configure_metrics(load_settings(metrics_enabled=True, service_name=service))
    _sink.sink.drop("a test drop")
    _sink.sink.drop("a test drop")
    assert _value("backend_kit_log_lines_dropped_total", service=service) == 2.0


# --- Django ---------------------------------------------------------------------------


def test_django_serves_metrics_with_route_templates_and_bounded_labels() -> None:
    pytest.importorskip("pytest_django")
    from django.test import Client

    from backend_kit.django._state import setup
    from tests.django_project.service import ServiceSettings

    service = _service()
    setup(
        ServiceSettings(
            metrics_enabled=True,
            metrics_token=TOKEN,
            environment="production",
            service_name=service,
        )
    )
    client = Client()
    assert client.get("/hello/ada").status_code == 200
    assert client.get("/livez").status_code == 200
    for number in range(10_000):
        client.get(f"/scan/{number}")
    for headers in ({}, {"Authorization": "Bearer nope"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert b"http_server" not in refused.content
        assert b"# TYPE" not in refused.content
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert _route_values(service) == {"hello/<str:name>", "/livez", "unmatched"}
    labels = {"service": service, "method": "GET", "route": "unmatched", "status": "404"}
    assert _value("http_server_requests_total", **labels) == 10_000


def test_django_async_views_are_counted_and_the_scrape_follows_accept() -> None:
    pytest.importorskip("pytest_django")
    from django.test import AsyncClient

    from backend_kit.django._state import setup
    from tests.django_project.service import ServiceSettings

    service = _service()
    setup(
        ServiceSettings(
            metrics_enabled=True,
            metrics_token=TOKEN,
            environment="production",
            service_name=service,
        )
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def requests() -> tuple[list[int], Any, Any]:
        client = AsyncClient()
        statuses = [(await client.get("/whoami-async")).status_code for _ in range(3)]
        statuses.append((await client.get("/livez")).status_code)
        statuses.append((await client.post("/metrics", headers=auth)).status_code)
        text = await client.get("/metrics", headers=auth)
        scraped = await client.get("/metrics", headers={**auth, "Accept": OPENMETRICS})
        return statuses, text, scraped

    statuses, text, scraped = asyncio.run(requests())
    assert statuses == [200, 200, 200, 200, 405]
    assert text["Content-Type"].startswith("text/plain; version=0.0.4")
    assert scraped["Content-Type"].startswith("application/openmetrics-text")
    assert scraped.content.decode().endswith("# EOF\n")
    labels = {"service": service, "method": "GET", "status": "200"}
    assert _value("http_server_requests_total", **labels, route="whoami-async") == 3
    assert _value("http_server_requests_total", **labels, route="/livez") == 1
    # Neither the scrapes nor the refused POST to the metrics path are counted.
    assert _route_values(service) == {"whoami-async", "/livez"}


# --- ASGI -----------------------------------------------------------------------------


def test_asgi_counts_route_templates_and_serves_metrics() -> None:
    import httpx
    from fastapi import FastAPI

    from backend_kit.asgi import BackendKitMiddleware

    service = _service()
    app = FastAPI()

    @app.get("/items/{item}")
    async def item(item: int) -> dict[str, int]:
        return {"item": item}

    settings = load_settings(
        metrics_enabled=True, metrics_token=TOKEN, environment="production", service_name=service
    )
    app.add_middleware(BackendKitMiddleware, settings=settings)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    async def requests() -> tuple[list[int], httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            statuses = [(await client.get(f"/items/{number}")).status_code for number in range(5)]
            for path in ("/nowhere", "/readyz", "/metrics"):
                statuses.append((await client.get(path)).status_code)
            text = await client.get("/metrics", headers=auth)
            scraped = await client.get("/metrics", headers={**auth, "Accept": OPENMETRICS})
            return statuses, text, scraped

    statuses, text, scraped = asyncio.run(requests())
    assert statuses == [200, 200, 200, 200, 200, 404, 200, 401]
    assert text.status_code == 200
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert scraped.headers["content-type"].startswith("application/openmetrics-text")
    ours = [
        (s.labels["route"], s.labels["status"], s.value)
        for family in openmetrics_parser.text_string_to_metric_families(scraped.text)
        if family.name == "http_server_requests"
        for s in family.samples
        if s.name == "http_server_requests_total" and s.labels["service"] == service
    ]
    assert sorted(ours) == [
        ("/items/{item}", "200", 5.0),
        ("/readyz", "200", 1.0),
        ("unmatched", "404", 1.0),
    ]
    histogram = {"service": service, "method": "GET", "route": "/items/{item}", "status": "200"}
    assert _value("http_server_request_duration_seconds_count", **histogram) == 5


# --- gunicorn: four workers, recycled -------------------------------------------------


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if _get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"readiness never passed on port {port}")


def _scraped_total(port: int, route: str, accept: str | None = None) -> float:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if accept:
        headers["Accept"] = accept
    status, body = _get(port, "/metrics", headers)
    assert status == 200
    parse = (
        openmetrics_parser.text_string_to_metric_families
        if accept
        else text_string_to_metric_families
    )
    total = 0.0
    for family in parse(body.decode()):
        for sample in family.samples:
            if sample.name == "http_server_requests_total" and sample.labels["route"] == route:
                total += sample.value
    return total


def _gunicorn_env(metrics_dir: Path) -> dict[str, str]:
    from .test_examples import _clean_env

    return {
        **_clean_env(),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "WARNING",
        "ENVIRONMENT": "production",
        "SERVICE_NAME": "metrics-under-gunicorn",
        "METRICS_ENABLED": "true",
        "METRICS_TOKEN": TOKEN,
        "METRICS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONPATH": str(APP_DIR),
    }


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn needs POSIX")
def test_gunicorn_scrape_sums_all_workers_recycled_ones_included(tmp_path: Path) -> None:
    requests = 400
    options = [
        *CONFIG,
        "--workers", "4", "--threads", "2",
        "--max-requests", "30", "--max-requests-jitter", "0",
    ]  # fmt: skip
    metrics_dir = tmp_path / "metrics"
    env = _gunicorn_env(metrics_dir)
    health_port = free_port()
    env["HEALTH_PORT"] = str(health_port)
    with gunicorn_server(
        "app:app", cwd=APP_DIR, env=env, log_path=tmp_path / "gunicorn.log", options=options
    ) as server:
        _wait_ready(server.port)
        pids = set()
        for _ in range(requests):
            status, body = _get(server.port, "/work")
            assert status == 200
            pids.add(body)
        # 400 requests at 30 per worker life: far more worker processes than 4.
        assert len(pids) > 8
        # Any worker answers the scrape, each with the sum over all of them.
        totals = {_scraped_total(server.port, "/work") for _ in range(12)}
        totals |= {_scraped_total(server.port, "/work", OPENMETRICS) for _ in range(4)}
        # The same sums on HEALTH_PORT, a port that need not be published.
        totals |= {_scraped_total(health_port, "/work") for _ in range(4)}
        assert totals == {float(requests)}
        assert _get(health_port, "/metrics")[0] == 401
        # Cache and retry metrics are summed across workers as well.
        for number in range(20):
            assert _get(server.port, f"/items/{number % 5}")[0] == 200
        status, body = _get(server.port, "/metrics", {"Authorization": f"Bearer {TOKEN}"})
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        loads = sum(s.value for s in families["backend_kit_cache_loads"].samples)
        misses = sum(s.value for s in families["backend_kit_cache_misses"].samples)
        hits = sum(s.value for s in families["backend_kit_cache_hits"].samples)
        assert hits + misses == 20
        assert loads == misses
        assert _get(server.port, "/metrics")[0] == 401

    # A new start empties the directory: the previous run's counters are gone.
    env["HEALTH_PORT"] = str(free_port())
    with gunicorn_server(
        "app:app", cwd=APP_DIR, env=env, log_path=tmp_path / "gunicorn2.log", options=options
    ) as server:
        _wait_ready(server.port)
        assert _get(server.port, "/work")[0] == 200
        assert _scraped_total(server.port, "/work") == 1.0


def test_dropped_sentry_events_are_counted_by_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from backend_kit import _sentry

    # A counter of its own: the process's drop count and "recently dropped" stay untouched.
    monkeypatch.setattr(_sentry, "_drops", _sentry._DropCounter())
    service = _service()
    configure_metrics(load_settings(metrics_enabled=True, service_name=service))
    _sentry._drops.record("queue_overflow", "error", 3)
    _sentry._drops.record("network_error", "error", 1)
    _sentry._drops.record("sample_rate", "error", 5)  # sampled out on purpose: not a loss
    dropped = "backend_kit_sentry_events_dropped_total"
    assert _value(dropped, service=service, reason="queue_overflow") == 3.0
    assert _value(dropped, service=service, reason="network_error") == 1.0
    assert _value(dropped, service=service, reason="sample_rate") == 0.0


def test_stale_serves_are_counted_while_one_caller_refreshes() -> None:
    from backend_kit import MemoryCache

    service = _service()
    configure_metrics(load_settings(metrics_enabled=True, service_name=service))
    loads = {"count": 0}
    gate = threading.Event()

    @backend_kit.cached(ttl=0.3, stale_ttl=30, cache=MemoryCache())
    def rate() -> int:
        loads["count"] += 1
        if loads["count"] > 1:
            gate.wait(5)  # the refresh is slow; meanwhile others are served the stale value
        return loads["count"]

    assert rate() == 1
    time.sleep(0.35)
    refresher = threading.Thread(target=rate)
    refresher.start()
    time.sleep(0.1)
    others = [rate() for _ in range(5)]
    gate.set()
    refresher.join(5)
    assert others == [1] * 5
    assert _function_value("backend_kit_cache_stale_serves_total", service, "rate") == 5


def test_fallbacks_to_the_memory_tier_are_counted_during_a_redis_outage() -> None:
    pytest.importorskip("redis")
    from backend_kit import RedisCache

    from .servers import redis_server

    service = _service()
    configure_metrics(load_settings(metrics_enabled=True, service_name=service))
    with redis_server() as server:
        prefix = f"bk-metrics-{uuid.uuid4().hex}:"
        backend = RedisCache(
            server.url, prefix=prefix, failure_threshold=3, probe_interval=30, timeout=0.5
        )

        @backend_kit.cached(ttl=60, cache=backend)
        def total(n: int) -> int:
            return n * 10

        assert total(1) == 10
        server.stop()
        assert [total(1) for _ in range(20)] == [10] * 20
        counted = _function_value("backend_kit_cache_fallbacks_total", service, "total")
        assert counted == total.cache_info().fallbacks > 0
        # The cache's own circuit breaker reports its opening.
        breaker = {"service": service, "breaker": backend.breaker.backend}
        assert _value("backend_kit_circuit_breaker_state", **breaker) == 2.0
        moved = {**breaker, "from_state": "closed", "to_state": "open"}
        assert _value("backend_kit_circuit_breaker_transitions_total", **moved) == 1.0
        backend.close()
