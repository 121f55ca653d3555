"""Fault scenarios over the example apps: gunicorn, a bounded load generator, a
readiness prober, and a TCP proxy that breaks a dependency in phases.

Shared by the fault tests (which assert) and ``benchmarks/faults.py`` (which prints the
figures). Everything runs on 127.0.0.1 and every phase, request and wait is bounded.
"""

from __future__ import annotations

import http.client
import http.server
import itertools
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import orjson

from tests.faults.proxy import Mode, tcp_proxy
from tests.servers import gunicorn_server, redis_server, silent_tcp_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
POSTGRES_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

#: The timeouts the scenarios configure; the assertions and the docs derive from them.
STATEMENT_TIMEOUT = 0.5  # DATABASE_STATEMENT_TIMEOUT
READ_TIMEOUT = STATEMENT_TIMEOUT + 1.0  # the client-side read timeout database_from_url sets
CONNECT_TIMEOUT = 2  # libpq's connect_timeout, whole seconds
CACHE_TIMEOUT = 0.4  # CACHE_TIMEOUT: connect and read timeout of the cache's Redis
HEALTH_CHECK_TIMEOUT = 0.5
HEALTH_CACHE_SECONDS = 0.1
PROBE_INTERVAL = 0.05
CLIENTS = 8  # concurrent load clients
CLIENT_PAUSE = 0.02  # seconds between one client's requests, to leave CPU to the rest
REQUEST_TIMEOUT = 20.0  # a request that takes longer counts as an error

_SETTINGS_PREFIXES = ("CATALOG_", "SHOP_", "DATABASE_URL", "CACHE_URL", "SENTRY_", "LOG_")


@dataclass(frozen=True)
class Sample:
    started: float  # monotonic
    latency: float
    status: int  # 0 when no HTTP answer came (refused, reset, timed out)
    path: str
    request_id: str
    echoed_id: str | None


@dataclass(frozen=True)
class Phase:
    name: str  # "before", "cut", "after", "hang", ...
    mode: Mode
    seconds: float


@dataclass
class PhaseResult:
    name: str
    mode: Mode
    started: float
    ended: float
    samples: list[Sample]  # those that ended in the phase
    probes: list[tuple[float, int]]  # (monotonic, status) of /readyz during the phase
    downstream_calls: int = 0

    @property
    def errors(self) -> list[Sample]:
        return [s for s in self.samples if s.status == 0 or s.status >= 500]

    def percentile(self, q: float) -> float:
        latencies = sorted(s.latency for s in self.samples)
        if not latencies:
            return 0.0
        if len(latencies) == 1:
            return latencies[0]
        return statistics.quantiles(latencies, n=100, method="inclusive")[int(q) - 1]

    def first_probe(self, status: int) -> float | None:
        """Seconds from the phase start to the first probe answering *status*."""
        for at, answered in self.probes:
            if answered == status:
                return at - self.started
        return None

    def last_error_end(self) -> float:
        """Seconds from the phase start until the last failed request of the phase
        ended (0 when none failed): how long requests took to recover."""
        ends = [s.started + s.latency - self.started for s in self.errors]
        return max(ends, default=0.0)

    def probe_changes(self) -> int:
        """How often the readiness status changed within the phase."""
        statuses = [s for _, s in self.probes]
        return sum(1 for a, b in itertools.pairwise(statuses) if a != b)


@dataclass
class ScenarioResult:
    name: str
    phases: list[PhaseResult]
    log_lines: list[dict[str, Any]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)  # every load request, all phases

    def phase(self, name: str) -> PhaseResult:
        return next(p for p in self.phases if p.name == name)


# -- HTTP ----------------------------------------------------------------------------------


def http_get(port: int, path: str, request_id: str, timeout: float) -> tuple[int, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"X-Request-ID": request_id})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("X-Request-ID")
    except (OSError, http.client.HTTPException):
        return 0, None
    finally:
        connection.close()


class _Load:
    """*CLIENTS* threads requesting *paths* in turn until stopped (bounded by count)."""

    def __init__(self, port: int, paths: list[str], *, max_per_client: int = 5000) -> None:
        self.port = port
        self.paths = paths
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._max = max_per_client
        self._threads = [
            threading.Thread(target=self._client, args=(n,), daemon=True) for n in range(CLIENTS)
        ]

    def _client(self, number: int) -> None:
        for count in range(self._max):
            if self._stop.is_set():
                return
            path = self.paths[(number + count) % len(self.paths)]
            request_id = f"fault-{uuid.uuid4().hex}"
            started = time.monotonic()
            status, echoed = http_get(self.port, path, request_id, REQUEST_TIMEOUT)
            latency = time.monotonic() - started
            sample = Sample(started, latency, status, path, request_id, echoed)
            with self._lock:
                self.samples.append(sample)
            self._stop.wait(CLIENT_PAUSE)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)


class _Prober:
    """Asks /readyz every *PROBE_INTERVAL* seconds, as a load balancer would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.probes: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(100_000):
            if self._stop.is_set():
                return
            status, _ = http_get(self.port, "/readyz", f"probe-{uuid.uuid4().hex}", 5.0)
            self.probes.append((time.monotonic(), status))
            self._stop.wait(PROBE_INTERVAL)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def run_phases(
    port: int,
    paths: list[str],
    switch: Callable[[Mode], None],
    phases: list[Phase],
    downstream: Callable[[], int] = lambda: 0,
) -> tuple[list[PhaseResult], list[Sample]]:
    load, prober = _Load(port, paths), _Prober(port)
    load.start()
    prober.start()
    marks: list[tuple[Phase, float, float, int, int]] = []
    try:
        for phase in phases:
            switch(phase.mode)
            started, calls_before = time.monotonic(), downstream()
            time.sleep(phase.seconds)
            marks.append((phase, started, time.monotonic(), calls_before, downstream()))
    finally:
        switch("pass")
        load.stop()
        prober.stop()
    results = []
    for phase, started, ended, calls_before, calls_after in marks:
        results.append(
            PhaseResult(
                name=phase.name,
                mode=phase.mode,
                started=started,
                ended=ended,
                # By when it ended: a request caught by a fault counts in the fault's phase.
                samples=[s for s in load.samples if started <= s.started + s.latency < ended],
                probes=[(at, st) for at, st in prober.probes if started <= at < ended],
                downstream_calls=calls_after - calls_before,
            )
        )
    return results, list(load.samples)


# -- services ------------------------------------------------------------------------------


class RatesService:
    """A loopback exchange-rate service that counts its calls (the cache's downstream)."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def count(self) -> int:
        with self._lock:
            return self.calls


@contextmanager
def rates_service() -> Iterator[tuple[str, RatesService]]:
    service = RatesService()
    body = orjson.dumps({"base": "USD", "rates": {"USD": 1.0, "EUR": 0.5}})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with service._lock:
                service.calls += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", service
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _env(prefix: str, tmp: Path, settings: dict[str, str]) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(_SETTINGS_PREFIXES)
    }
    (tmp / "secrets").mkdir(exist_ok=True)
    common = {
        "ENVIRONMENT": "test",
        "LOG_FORMAT": "json",
        "HEALTH_CACHE_SECONDS": str(HEALTH_CACHE_SECONDS),
        "HEALTH_CHECK_TIMEOUT": str(HEALTH_CHECK_TIMEOUT),
        "HEALTH_SHARED_DIR": str(tmp / "health"),
        "CACHE_TIMEOUT": str(CACHE_TIMEOUT),
        "DATABASE_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
        **settings,
    }
    return {
        **env,
        "PYTHONUNBUFFERED": "1",
        "BACKEND_KIT_SECRETS_DIR": str(tmp / "secrets"),
        **{f"{prefix}{name}": value for name, value in common.items()},
    }


def _log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return lines


# Twelve threads per worker: gunicorn may hand all eight load clients to one worker, and
# the readiness probe must still find a free thread there.
GUNICORN = ["--workers", "2", "--threads", "12", "--graceful-timeout", "5", "--timeout", "30"]

CACHE_PHASES = [
    Phase("before", "pass", 2.0),
    Phase("cut", "cut", 2.5),
    Phase("after cut", "pass", 2.5),
    Phase("hang", "hang", 2.5),
    Phase("after hang", "pass", 2.5),
]

DATABASE_PHASES = [
    Phase("before", "pass", 2.0),
    Phase("cut", "cut", 2.5),
    Phase("after cut", "pass", 3.0),
    # Longer than the documented worst case of one request, so a request that the
    # timeouts did not bound would show as one lasting the whole phase.
    Phase("hang", "hang", 6.0),
    Phase("after hang", "pass", 3.0),
]


def cache_scenario(tmp: Path) -> ScenarioResult:
    """The Flask example with its shared cache (a throwaway Redis) behind the proxy."""
    with ExitStack() as stack:
        redis = stack.enter_context(redis_server())
        proxy = stack.enter_context(tcp_proxy(redis.port))
        sentry_port = stack.enter_context(silent_tcp_server())
        rates_url, rates = stack.enter_context(rates_service())
        env = _env(
            "CATALOG_",
            tmp,
            {
                "SERVICE_NAME": "catalog-faults",
                "DATABASE_URL": f"sqlite:///{tmp / 'catalog.sqlite3'}",
                "CACHE_URL": f"redis://127.0.0.1:{proxy.port}/0",
                "RATES_URL": rates_url,
                "RATES_TIMEOUT": "2",
                "RATES_CACHE_SECONDS": "60",
                "SENTRY_DSN": f"http://publickey@127.0.0.1:{sentry_port}/1",
            },
        )
        log_path = tmp / "flask.log"
        server = stack.enter_context(
            gunicorn_server(
                "app:app", cwd=EXAMPLES / "flask_app", env=env, log_path=log_path, options=GUNICORN
            )
        )
        _create_product(server.port, "tea")
        paths = ["/products/tea/price?currency=EUR", "/products/tea"]
        phases, sent = run_phases(server.port, paths, proxy.set_mode, CACHE_PHASES, rates.count)
        server.stop()  # flushes every log line before they are counted
        return ScenarioResult("cache (Flask, Redis)", phases, _log_lines(log_path), sent)


def database_scenario(tmp: Path) -> ScenarioResult:
    """The Django example on PostgreSQL (its own schema) behind the proxy."""
    import psycopg

    target = urlsplit(POSTGRES_URL)
    schema = f"faults_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    try:
        with ExitStack() as stack:
            proxy = stack.enter_context(tcp_proxy(target.port or 5432))
            sentry_port = stack.enter_context(silent_tcp_server())
            netloc = f"{target.username or 'postgres'}@127.0.0.1:{proxy.port}"
            if target.password:
                netloc = f"{target.username}:{target.password}@127.0.0.1:{proxy.port}"
            options = quote(f"-c search_path={schema}")
            url = (
                f"postgres://{netloc}{target.path}"
                f"?connect_timeout={CONNECT_TIMEOUT}&options={options}"
            )
            env = _env(
                "SHOP_",
                tmp,
                {
                    "SERVICE_NAME": "shop-faults",
                    "SECRET_KEY": "fault-tests-only-0123456789",
                    "DATABASE_URL": url,
                    "SENTRY_DSN": f"http://publickey@127.0.0.1:{sentry_port}/1",
                },
            )
            env["DJANGO_SETTINGS_MODULE"] = "shop.settings"
            cwd = EXAMPLES / "django_project"
            migrated = subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput"],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert migrated.returncode == 0, migrated.stdout + migrated.stderr
            log_path = tmp / "django.log"
            server = stack.enter_context(
                gunicorn_server(
                    "shop.wsgi:application", cwd=cwd, env=env, log_path=log_path, options=GUNICORN
                )
            )
            _create_product(server.port, "tea")
            phases, sent = run_phases(
                server.port, ["/products", "/products/tea"], proxy.set_mode, DATABASE_PHASES
            )
            server.stop()
            return ScenarioResult(
                "database (Django, PostgreSQL)", phases, _log_lines(log_path), sent
            )
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


SQLITE_PHASES = [
    Phase("before", "pass", 2.0),
    # Longer than a request's bound (statement timeout + 2 s of slack in the tests).
    Phase("locked", "hang", 4.0),
    Phase("after lock", "pass", 2.0),
]


class SQLiteLock:
    """Another process holding an EXCLUSIVE lock on an SQLite file while in ``hang``
    mode, as a stuck writer or a backup would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._holder: subprocess.Popen[str] | None = None

    def switch(self, mode: Mode) -> None:
        if mode != "pass" and self._holder is None:
            self._holder = subprocess.Popen(
                [sys.executable, "-c", _LOCK_HOLDER, str(self.path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self._holder.stdout is not None
            assert self._holder.stdout.readline().strip() == "locked"
        elif mode == "pass" and self._holder is not None:
            self._holder.communicate(input="", timeout=10)
            self._holder = None


_LOCK_HOLDER = (
    "import sqlite3, sys\n"
    "connection = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
    "connection.execute('BEGIN EXCLUSIVE')\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


def sqlite_scenario(tmp: Path) -> ScenarioResult:
    """The Flask example on its SQLite file while another process locks it."""
    database = tmp / "catalog.sqlite3"
    with ExitStack() as stack:
        sentry_port = stack.enter_context(silent_tcp_server())
        env = _env(
            "CATALOG_",
            tmp,
            {
                "SERVICE_NAME": "catalog-faults",
                "DATABASE_URL": f"sqlite:///{database}",
                "SENTRY_DSN": f"http://publickey@127.0.0.1:{sentry_port}/1",
            },
        )
        log_path = tmp / "flask-sqlite.log"
        server = stack.enter_context(
            gunicorn_server(
                "app:app", cwd=EXAMPLES / "flask_app", env=env, log_path=log_path, options=GUNICORN
            )
        )
        _create_product(server.port, "tea")
        lock = SQLiteLock(database)
        phases, sent = run_phases(
            server.port, ["/products", "/products/tea"], lock.switch, SQLITE_PHASES
        )
        server.stop()
        return ScenarioResult("database (Flask, SQLite)", phases, _log_lines(log_path), sent)


def _create_product(port: int, sku: str) -> None:
    body = orjson.dumps({"sku": sku, "name": "Green tea", "price": 4.5})
    deadline = time.monotonic() + 30
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.request(
                "POST", "/products", body=body, headers={"Content-Type": "application/json"}
            )
            status = connection.getresponse().status
        except OSError:
            status = 0
        finally:
            connection.close()
        if status in (201, 409):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not create the product: HTTP {status}")
        time.sleep(0.2)


# -- report --------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}"


def table(results: list[ScenarioResult]) -> str:
    """One row per phase: requests, errors, p50/p99 (ms), readiness changes, downstream."""
    header = (
        "| scenario | phase | requests | errors | p50 ms | p99 ms | max ms "
        "| /readyz 503 after ms | /readyz 200 after ms | last error ends ms | readiness changes "
        "| downstream calls |"
    )
    rows = [header, "|" + " --- |" * 12]
    for result in results:
        for phase in result.phases:
            latencies = [s.latency for s in phase.samples]
            rows.append(
                f"| {result.name} | {phase.name} | {len(phase.samples)} | {len(phase.errors)} "
                f"| {_ms(phase.percentile(50))} | {_ms(phase.percentile(99))} "
                f"| {_ms(max(latencies, default=0.0))} "
                f"| {_ms(phase.first_probe(503)) if phase.mode != 'pass' else '-'} "
                f"| {_ms(phase.first_probe(200)) if phase.mode == 'pass' else '-'} "
                f"| {_ms(phase.last_error_end()) if phase.mode == 'pass' else '-'} "
                f"| {phase.probe_changes()} | {phase.downstream_calls} |"
            )
    return "\n".join(rows)
