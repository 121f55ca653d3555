"""gunicorn configuration for backend_kit: ``gunicorn -c python:backend_kit.gunicorn app:app``.

What it sets up, for the Flask and the Django adapter alike:

- **Drain on SIGTERM.** Readiness fails in every worker for ``SHUTDOWN_DRAIN_SECONDS``
  while they keep serving, each response carrying ``Connection: close``; then gunicorn
  stops gracefully (new connections refused, requests in flight finished within
  ``graceful_timeout``). A second SIGTERM skips what is left of the drain.
- **One log stream.** The master's lines, the workers' lines and (when enabled) the
  access log go through backend_kit's pipeline in one format, to stdout, and lines
  from several processes never interleave on the pipe (a lock the processes share).
- **Fork safety.** Locks, single-flight tables, health slots and Sentry's transport are
  re-created in each worker (`os.register_at_fork`, so this holds without gunicorn too).
- **Fail fast.** A bad configuration is printed once, as the list of problems, and
  gunicorn exits with status 1.
- **Probes beside the requests.** With ``HEALTH_PORT`` set, each worker also answers
  ``/livez``, ``/readyz`` and ``/startupz`` on that port from a thread of its own (and
  ``/metrics`` with ``METRICS_ENABLED``).
- **Metrics summed over the workers.** With ``METRICS_ENABLED``, prometheus_client's
  multiprocess mode: a directory per service (``METRICS_MULTIPROC_DIR``) emptied at
  start, a worker's live gauges dropped when it exits (`child_exit`), and a scrape of
  any worker answering for all of them, recycled workers included.
- **Container defaults.** See `container_defaults` for the values and their reasons.

The settings class is the one ``BACKEND_KIT_SETTINGS`` names (``module:Class``), as for
the ``backend-kit`` command; default `backend_kit.Settings`.

To keep a configuration file of your own, import what you need from here::

    # gunicorn.conf.py
    from backend_kit.gunicorn import *  # noqa: F403  (hooks, logger_class, defaults)
    workers = 4
"""

from __future__ import annotations

import math
import mmap
import os
import signal
import socket
import struct
import sys
import threading
import time
from contextlib import suppress
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from gunicorn import glogging  # type: ignore[import-untyped]
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("backend_kit.gunicorn needs gunicorn: pip install gunicorn") from exc

from ._active import set_active_settings
from ._class_import import import_settings_class
from ._errors import ConfigError
from ._logging import ProcessLock, configure_logging, use_process_lock
from ._settings import Settings
from .health import health_paths, is_draining, start_draining
from .health._lifecycle import share_draining

if TYPE_CHECKING:
    from .health import HealthRunner

__all__ = [
    "Logger",
    "accesslog",
    "bind",
    "child_exit",
    "container_defaults",
    "graceful_timeout",
    "logger_class",
    "on_starting",
    "post_fork",
    "post_worker_init",
    "pre_fork",
    "pre_request",
    "threads",
    "timeout",
    "when_ready",
    "worker_tmp_dir",
]

SETTINGS_VARIABLE = "BACKEND_KIT_SETTINGS"
# In a container the service is reached from outside it, through its published port.
_ALL_INTERFACES = "0.0.0.0"  # noqa: S104

# What the master set up; inherited by the workers through fork.
_settings: Settings | None = None
_lock_file: Any = None
_drain_started: float | None = None
_health_socket: socket.socket | None = None
# When the drain ends (time.monotonic(), the same clock in every process; 0 while not
# draining), in memory the master shares with its workers.
_drain_deadline: mmap.mmap | None = None
# Set by the first worker that reports a configuration error, shared with the others.
_config_reported: mmap.mmap | None = None
# How long a worker that got SIGTERM waits for the master to say it is draining too.
_DRAIN_NOTICE_WAIT = 0.5


def _settings_class() -> type[Settings]:
    path = os.environ.get(SETTINGS_VARIABLE)
    return import_settings_class(path) if path else Settings


def _fail(error: ConfigError) -> None:
    # Once, as the problem list: a traceback would only bury the variable to fix.
    sys.stderr.write(f"backend_kit: gunicorn cannot start.\n{error}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def _load_settings() -> Settings:
    global _settings
    if _settings is None:
        try:
            _settings = _settings_class()()
        except ConfigError as error:
            _fail(error)
    assert _settings is not None
    return _settings


def _seconds(value: Any, fallback: float) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return fallback


def container_defaults(settings: Settings | None = None) -> dict[str, Any]:
    """The gunicorn options this module sets, computed from *settings*.

    - ``worker_tmp_dir="/dev/shm"``: workers touch a file there on every heartbeat; on
      a container's overlay disk that write can stall for seconds and get a healthy
      worker killed.
    - ``timeout``: a worker silent for longer is killed. It is above the longest
      statement (``DATABASE_STATEMENT_TIMEOUT``, 30 s when not set) plus the readiness
      deadline (``HEALTH_DEADLINE``), so a request waiting on the slowest legitimate
      query never gets its worker killed.
    - ``graceful_timeout``: after the drain, requests in flight get the longest
      statement plus 5 s to finish before their worker is killed.
    - ``threads=4`` (the gthread worker): a request waiting on a dependency holds a
      thread, not the whole worker.
    - ``accesslog=None``: ``request_finished`` is the access log; enable gunicorn's with
      ``--access-logfile -`` and it comes out in the same format.
    """
    statement = 30.0
    deadline = 0.9  # HEALTH_DEADLINE's default
    if settings is not None:
        statement = _seconds(getattr(settings, "database_statement_timeout", None), 30.0)
        deadline = float(settings.health_deadline)
    return {
        # Memory, not a temporary file of ours: gunicorn creates its files there itself.
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,  # noqa: S108
        "timeout": max(30, math.ceil(statement + deadline) + 5),
        "graceful_timeout": math.ceil(statement) + 5,
        "threads": 4,
        "accesslog": None,
    }


def _defaults_at_import() -> dict[str, Any]:
    # gunicorn reads this module's variables before any hook runs; a bad configuration
    # must not fail here (gunicorn would print a traceback): the logger reports it.
    try:
        return container_defaults(_settings_class()())
    except Exception:
        return container_defaults(None)


_defaults = _defaults_at_import()


# --- metrics ----------------------------------------------------------------------

# Marks a multiprocess directory a backend_kit master chose, so a master started from
# it (gunicorn's USR2 upgrade) makes its own instead of emptying its parent's.
_METRICS_DIR_OWNER = "BACKEND_KIT_METRICS_DIR"
_metrics_error: ConfigError | None = None


def _metrics_dir_at_import() -> None:
    """With ``METRICS_ENABLED``, point ``PROMETHEUS_MULTIPROC_DIR`` at an empty
    directory now, in the master, while gunicorn reads its configuration: before the
    application (``preload_app``) or any worker imports prometheus_client, which reads
    the variable when it is imported."""
    global _metrics_error
    try:
        settings = _settings_class()()
    except Exception:
        return  # reported by the logger, once, with the problem list
    if not settings.metrics_enabled:
        return
    from ._metrics_dir import MULTIPROC_VARIABLE, prepare_multiprocess_dir

    inherited = os.environ.get(MULTIPROC_VARIABLE)
    chosen_by_user = inherited and os.environ.get(_METRICS_DIR_OWNER) != inherited
    try:
        directory = prepare_multiprocess_dir(
            settings, Path(inherited) if chosen_by_user and inherited else None
        )
    except ConfigError as error:
        _metrics_error = error
        return
    os.environ[_METRICS_DIR_OWNER] = str(directory)


_metrics_dir_at_import()
bind = os.environ.get("BIND", f"{_ALL_INTERFACES}:{os.environ.get('PORT', '8000')}")
worker_tmp_dir = _defaults["worker_tmp_dir"]
timeout = _defaults["timeout"]
graceful_timeout = _defaults["graceful_timeout"]
threads = _defaults["threads"]
accesslog = _defaults["accesslog"]


# --- logging ----------------------------------------------------------------------


class Logger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, writing through backend_kit's pipeline.

    The master configures logging from the settings (failing fast, once, on a bad
    configuration) and opens the lock that keeps the lines of all processes whole.
    ``gunicorn.error`` and ``gunicorn.access`` lose their own handlers and reach the
    root handler, like every other library's logger.
    """

    def setup(self, cfg: Any) -> None:
        global _lock_file
        super().setup(cfg)
        settings = _load_settings()
        if _lock_file is None:
            import tempfile

            # Opened once, here, before any fork: every process locks the same file.
            _lock_file = tempfile.TemporaryFile(dir=cfg.worker_tmp_dir or None)  # noqa: SIM115
            use_process_lock(_lock_file.fileno())
        set_active_settings(settings)
        # Logging only: adopts gunicorn.error and gunicorn.access. Not Sentry: the master
        # forks new workers at any time, and sentry-sdk's background threads (sender,
        # session flusher, monitor) hold locks a child could inherit held.
        configure_logging(settings)

    def access(self, resp: Any, req: Any, environ: Any, request_time: timedelta) -> None:
        """One structured ``access`` line per request (only when an access log is on)."""
        enabled = getattr(self, "access_log_enabled", None)  # gunicorn 24 and later
        if not (enabled if enabled is not None else self.cfg.accesslog):
            return
        status = getattr(resp, "status_code", None) or str(getattr(resp, "status", ""))[:3]
        self.access_log.info(
            "access",
            extra={
                "method": environ.get("REQUEST_METHOD"),
                "path": environ.get("PATH_INFO"),
                "status": int(status) if str(status).isdigit() else status,
                "duration_ms": round(request_time.total_seconds() * 1000.0, 3),
                "client": environ.get("REMOTE_ADDR"),
            },
        )


logger_class = Logger


# --- hooks ------------------------------------------------------------------------


def on_starting(server: Any) -> None:
    """Master, before anything else: share the draining state with the workers to
    come, and make SIGTERM drain first."""
    global _drain_deadline, _config_reported
    if _metrics_error is not None:
        _fail(_metrics_error)
    share_draining()
    if _drain_deadline is None:
        _drain_deadline = mmap.mmap(-1, 8)
    if _config_reported is None:
        _config_reported = mmap.mmap(-1, 1)
    original = server.handle_term

    def handle_term() -> None:
        global _drain_started
        drain = _load_settings().shutdown_drain_seconds
        if drain <= 0 or _drain_started is not None:
            original()  # gunicorn's graceful stop
            return
        _drain_started = time.monotonic()
        if _drain_deadline is not None:
            struct.pack_into("d", _drain_deadline, 0, _drain_started + drain)
        start_draining()
        server.log.info(
            "draining: readiness fails and connections close for %s s, then workers stop",
            drain,
        )
        # Signal handlers run in the main thread only: the timer asks for the stop with
        # a second SIGTERM, which lands in the branch above.
        timer = threading.Timer(drain, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()

    server.handle_term = handle_term


def when_ready(server: Any) -> None:
    """Master, listeners open, no worker forked yet: open the ``HEALTH_PORT`` listener
    that every worker will accept on."""
    global _health_socket
    port = _load_settings().health_port
    if port is None or _health_socket is not None:
        return
    host = _health_host(server.cfg.bind)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family, backlog=64)
    except OSError as exc:
        # Before any worker exists: stop here, once, with what to change.
        sys.stderr.write(
            f"backend_kit: gunicorn cannot start: HEALTH_PORT {port} on {host!r} cannot be "
            f"opened ({exc.strerror or exc}); choose a free port or unset HEALTH_PORT\n"
        )
        raise SystemExit(1) from None
    # Non-blocking: every worker waits on it, and only one wins each connection.
    listener.setblocking(False)
    _health_socket = listener
    server.log.info("health probes also on %s:%s", host, port)


def _health_host(binds: list[str]) -> str:
    for address in binds:
        if address.startswith(("unix:", "fd://")):
            continue
        host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
        return host or _ALL_INTERFACES
    return _ALL_INTERFACES


def child_exit(server: Any, worker: Any) -> None:
    """Master, a worker exited (recycled by ``max_requests``, killed, crashed): its
    live gauges leave the metrics; its counters stay, so totals never go backwards."""
    from ._metrics_dir import mark_worker_dead

    mark_worker_dead(worker.pid)


def pre_fork(server: Any, worker: Any) -> None:
    """Master, before each fork: a database connection opened here (``preload_app``)
    must not be shared by the workers."""
    if "django.db" not in sys.modules:
        return
    from django.conf import settings as django_settings

    # Imported is not configured (sentry-sdk imports Django to detect it): only a
    # configured project can have opened a connection.
    if django_settings.configured:
        from django.db import connections

        connections.close_all()


def post_fork(server: Any, worker: Any) -> None:
    """Worker, just forked (the library's locks and in-flight state were already
    re-created by `os.register_at_fork`): a configuration error raised while the
    application loads (its own settings class, a prefix) is printed once for all the
    workers, without a traceback, and stops gunicorn."""
    load_wsgi = worker.load_wsgi
    exit_status = int(getattr(server, "APP_LOAD_ERROR", 4))  # the master halts on it

    def load_wsgi_or_exit() -> None:
        try:
            load_wsgi()
        except Exception as exc:
            error = _config_error_in(exc)
            if error is None:
                raise
            if _report_once(error):
                raise SystemExit(exit_status) from None
        else:
            return
        # Another worker reported it, and its exit stops the master. Wait to be stopped:
        # a second failed worker while the master stops makes gunicorn print a traceback.
        deadline = time.monotonic() + 30
        while worker.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        raise SystemExit(0 if not worker.alive else exit_status)

    worker.load_wsgi = load_wsgi_or_exit


def _config_error_in(exc: BaseException) -> ConfigError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConfigError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _report_once(error: ConfigError) -> bool:
    # Every worker loads the same application and fails the same way; the first one to
    # get here says so (True), the others stay silent (one shared byte, set under the
    # log lock).
    shared = _config_reported
    if shared is not None and _lock_file is not None:
        lock = ProcessLock(_lock_file.fileno())
        locked = lock.acquire()  # bounded wait; without it, a second report is the worst
        try:
            first = shared[0] == 0
            shared[0] = 1
        finally:
            if locked:
                lock.release()
        if not first:
            return False
    with suppress(Exception):
        sys.stderr.write(f"backend_kit: the application cannot start.\n{error}\n")
        sys.stderr.flush()
    return True


def post_worker_init(worker: Any) -> None:
    """Worker, application loaded: keep serving through the drain when SIGTERM reaches
    the workers too, and start the probe server of ``HEALTH_PORT``."""
    if _load_settings().shutdown_drain_seconds > 0:
        _defer_sigterm_until_drained(worker.handle_exit)
    if _health_socket is None:
        return
    runner = _worker_health_runner(worker)
    thread = threading.Thread(
        target=_serve_probes,
        args=(_health_socket, runner, _load_settings()),
        name="backend_kit-health-port",
        daemon=True,
    )
    thread.start()


def _defer_sigterm_until_drained(handle_exit: Any) -> None:
    """An init process that forwards signals to the whole process group (dumb-init, a
    shell, ``kill -- -PGID``) sends SIGTERM to every worker at the moment the master
    starts draining: the workers then wait for the end of the drain before they stop
    accepting requests. A SIGTERM without a drain (fewer workers, a reload) stops the
    worker after at most `_DRAIN_NOTICE_WAIT`."""

    def exit_after_drain(signum: int) -> None:
        waited_until = time.monotonic() + _DRAIN_NOTICE_WAIT
        deadline = _drain_deadline_now()
        # The master may be handling the same signal at this very moment.
        while deadline == 0.0 and time.monotonic() < waited_until:
            time.sleep(0.01)
            deadline = _drain_deadline_now()
        if deadline > 0.0:
            time.sleep(max(0.0, deadline - time.monotonic()))
        handle_exit(signum, None)

    def on_sigterm(signum: int, frame: Any) -> None:
        thread = threading.Thread(
            target=exit_after_drain, args=(signum,), name="backend_kit-drain", daemon=True
        )
        thread.start()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn does: requests not disturbed


def _drain_deadline_now() -> float:
    shared = _drain_deadline
    return 0.0 if shared is None else float(struct.unpack_from("d", shared, 0)[0])


def pre_request(worker: Any, req: Any) -> None:
    """Worker, each request: while draining, close the connection after the response
    (``Connection: close``), so kept-alive clients reconnect elsewhere."""
    if is_draining():
        req.must_close = True
        return
    # Asked again when the response's headers go out, so a drain that starts while this
    # request runs still closes its connection; and that answer is kept. gunicorn asks
    # once more after the response: a drain starting in between must not close a
    # connection whose response said keep-alive (the client's next request on it would
    # meet a closed socket).
    keep_alive_unless = req.should_close
    decided: list[bool] = []

    def should_close() -> bool:
        if not decided:
            decided.append(is_draining() or keep_alive_unless())
        return decided[0]

    req.should_close = should_close


# --- the probe server of HEALTH_PORT ----------------------------------------------------


class _ProbeServer(ThreadingHTTPServer):
    daemon_threads = True  # a probe in progress must not hold the worker's exit


def _worker_health_runner(worker: Any) -> HealthRunner:
    """The runner the application's readiness uses, so both ports agree."""
    app = getattr(worker, "wsgi", None)
    extensions = getattr(app, "extensions", None)
    if isinstance(extensions, dict) and "backend_kit" in extensions:
        runner: HealthRunner = extensions["backend_kit"].health_runner
        return runner
    if "backend_kit.django._state" in sys.modules:
        from .django._state import state

        return state().health_runner
    from .health import HealthRunner

    return HealthRunner.from_settings(_load_settings())


def _serve_probes(listener: socket.socket, runner: HealthRunner, settings: Settings) -> None:
    paths = health_paths(settings)
    probes = {paths.live: "live", paths.ready: "ready", paths.startup: "startup"}

    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # seconds to read a request: a silent client holds one thread only
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, *, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            probe = probes.get(path)
            authorization = self.headers.get("Authorization")
            if probe is not None:
                answer = runner.respond(probe, authorization)  # type: ignore[arg-type]
            elif settings.metrics_enabled and path == paths.metrics:
                from .metrics import respond

                answer = respond(authorization, self.headers.get("Accept"), settings)
            else:
                self.send_error(404)
                return
            self.send_response(answer.status_code)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if body:
                self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            return None  # probes every few seconds would drown the service's lines

    server = _ProbeServer(listener.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = listener
    server.serve_forever(poll_interval=0.5)
