"""Celery: tasks carry the request that published them; workers log, report and answer
health probes like the web process.

`init_celery(app)` in the module that creates the Celery app wires it:

- publishing a task inside a request puts the request id into the task's headers
  (`backend_kit.context.inject_context`), and hides the task's arguments from Celery's
  ``argsrepr``/``kwargsrepr`` unless ``CELERY_LOG_TASK_ARGS`` is on;
- in the worker, each task runs inside `backend_kit.request_context` with the
  publisher's request id (or a new one), ``task_id`` and ``task_name``, so every log
  line and Sentry event of the task carries them; one ``task_finished`` event follows
  each run;
- worker and beat processes are configured by `backend_kit.configure` (logging and
  Sentry from the same settings as the web process) instead of Celery's own logging
  setup, so Celery's lines go through the same pipeline and redaction;
- a worker touches a heartbeat file for `worker_health`'s liveness probe.

Examples:
    >>> from celery import Celery
    >>> from backend_kit.celery import init_celery
    >>> app = init_celery(Celery("shop"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

try:
    from celery import Celery, bootsteps, signals
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'backend_kit.celery needs Celery; install it with: pip install "backend-kit[celery]"'
    ) from None

from ._active import active_settings_or_none, get_settings
from ._context import TASK_TAG_KEYS, request_context
from ._errors import ConfigError, ConfigProblem
from ._logging import EventWriter, get_logger, is_logging_configured
from ._settings import Settings
from .context import extract_context, inject_context
from .health import HealthCheck, HealthRegistry, HealthRunner, checks_from_settings
from .health._builtins import redis_check

if TYPE_CHECKING:
    from .health import HealthReport

__all__ = [
    "ARGS_PLACEHOLDER",
    "SIGNAL_UID",
    "HeartbeatStep",
    "broker_check",
    "heartbeat_path",
    "init_celery",
    "reset_celery",
    "worker_health",
]

AppT = TypeVar("AppT", bound=Celery)

#: What Celery's log lines show instead of task arguments (``CELERY_LOG_TASK_ARGS`` off).
ARGS_PLACEHOLDER = "(hidden)"

TASK_ID_KEY, TASK_NAME_KEY = TASK_TAG_KEYS

# Celery's loggers whose records carry task arguments (in ``record.args`` and the
# ``data`` extra): the task-received, task-succeeded/failed and request-failure lines.
_ARGUMENT_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.worker.request")

_STATES = {
    "SUCCESS": "success",
    "FAILURE": "failure",
    "RETRY": "retry",
    "REJECTED": "rejected",
    "IGNORED": "ignored",
}

_log = get_logger("backend_kit.celery")
# task_finished, once per task: the logging pipeline's steps without structlog's dispatch.
_line = EventWriter("backend_kit.celery")
_lock = threading.Lock()
_connected = False
_apps: weakref.WeakSet[Celery] = weakref.WeakSet()
# Where a running task keeps its context and start time (the attribute is set on
# Celery's per-run request object, so concurrent tasks in threads never share it).
_RUN_ATTRIBUTE = "_backend_kit_run"
#: The ``dispatch_uid`` of every Celery signal receiver backend_kit connects.
SIGNAL_UID = _UID = "backend_kit.celery"


def init_celery(app: AppT, *, settings: Settings | None = None) -> AppT:
    """Wire the Celery *app* into backend_kit and give it back.

    Call it where the app is created (both the web process, which publishes, and the
    worker import that module). Sets the broker from ``CELERY_BROKER_URL`` when it is
    set, turns off Celery's own logging setup (``worker_hijack_root_logger``,
    ``worker_redirect_stdouts``) and connects backend_kit's signal handlers (once per
    process, whatever the number of apps). Does no I/O: the worker and beat processes
    run `backend_kit.configure` when Celery sets up their logging, with the active
    settings, or *settings* when given, else those loaded from the environment.
    Safe to call twice.
    """
    global _connected, _settings_for_processes
    active = settings if settings is not None else get_settings()
    if settings is not None:
        _settings_for_processes = settings
    if active.celery_broker_url is not None:
        app.conf.broker_url = active.celery_broker_url.get_secret_value()
    app.conf.worker_hijack_root_logger = False
    app.conf.worker_redirect_stdouts = False
    with _lock:
        if app not in _apps:
            app.steps["worker"].add(HeartbeatStep)
            _apps.add(app)
        if not _connected:
            signals.setup_logging.connect(_on_setup_logging, weak=False, dispatch_uid=_UID)
            signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid=_UID)
            signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid=_UID)
            signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid=_UID)
            signals.task_revoked.connect(_on_revoked, weak=False, dispatch_uid=_UID)
            for name in _ARGUMENT_LOGGERS:
                logging.getLogger(name).addFilter(_hide_arguments)
            _connected = True
    return app


def reset_celery() -> None:
    """Disconnect what `init_celery` connected (for tests). Apps keep their settings."""
    global _connected, _settings_for_processes
    with _lock:
        for signal in (
            signals.setup_logging,
            signals.before_task_publish,
            signals.task_prerun,
            signals.task_postrun,
            signals.task_revoked,
        ):
            signal.disconnect(dispatch_uid=_UID)
        for name in _ARGUMENT_LOGGERS:
            logging.getLogger(name).removeFilter(_hide_arguments)
        _settings_for_processes = None
        _connected = False


_settings_for_processes: Settings | None = None


def _current_settings() -> Settings:
    active = active_settings_or_none()
    if active is not None:
        return active
    return _settings_for_processes if _settings_for_processes is not None else get_settings()


# --- worker and beat processes -------------------------------------------------------


def _on_setup_logging(**_: Any) -> None:
    # Connected at all, this receiver stops Celery from configuring logging itself. A
    # process that backend_kit already configured (the Django adapter did) keeps that.
    if not is_logging_configured():
        from ._configure import configure

        configure(_current_settings())


def _hide_arguments(record: logging.LogRecord) -> bool:
    """Logger filter: task arguments out of Celery's own lines, unless opted in."""
    fields = record.args
    if not isinstance(fields, Mapping):
        return True
    # The task-received line is written before the task runs, outside its context.
    if isinstance(fields.get("id"), str) and not hasattr(record, TASK_ID_KEY):
        setattr(record, TASK_ID_KEY, fields["id"])
        setattr(record, TASK_NAME_KEY, fields.get("name"))
    if _current_settings().celery_log_task_args:
        return True
    if "args" in fields or "kwargs" in fields:
        record.args = {**fields, "args": ARGS_PLACEHOLDER, "kwargs": ARGS_PLACEHOLDER}
    # The same values again, as an ``extra`` field for custom handlers.
    record.__dict__.pop("data", None)
    return True


# --- publishing ----------------------------------------------------------------------


def _on_publish(headers: dict[str, Any] | None = None, body: Any = None, **_: Any) -> None:
    if headers is None:
        return
    inject_context(headers)
    if "argsrepr" in headers or "kwargsrepr" in headers:
        settings = _current_settings()
        if settings.celery_log_task_args:
            from ._active import get_redactor

            args, kwargs = _body_arguments(body)
            redacted = get_redactor().redact({"args": list(args), "kwargs": dict(kwargs)})
            headers["argsrepr"] = repr(redacted["args"])
            headers["kwargsrepr"] = repr(redacted["kwargs"])
        else:
            headers["argsrepr"] = ARGS_PLACEHOLDER
            headers["kwargsrepr"] = ARGS_PLACEHOLDER


def _body_arguments(body: Any) -> tuple[Any, Any]:
    # Message protocol 2: (args, kwargs, embed).
    if isinstance(body, (tuple, list)) and len(body) >= 2:
        return body[0] or (), body[1] or {}
    return (), {}


# --- running a task ------------------------------------------------------------------


def _task_headers(request: Any) -> Mapping[str, Any]:
    # Custom message headers become attributes of Celery's request (read, never
    # written, here); older protocol versions keep them under ``headers``.
    attributes: dict[str, Any] = vars(request)
    legacy = attributes.get("headers")
    return {**legacy, **attributes} if isinstance(legacy, Mapping) and legacy else attributes


def _on_prerun(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is None:
        return
    request = task.request
    values = extract_context(_task_headers(request))
    context = request_context(
        values.pop("request_id", None),
        **values,
        **{TASK_ID_KEY: task_id, TASK_NAME_KEY: task.name},
    )
    context.__enter__()
    setattr(request, _RUN_ATTRIBUTE, (context, time.perf_counter()))


def _on_postrun(
    task_id: str | None = None, task: Any = None, state: str | None = None, **_: Any
) -> None:
    if task is None:
        return
    request = task.request
    run = getattr(request, _RUN_ATTRIBUTE, None)
    if run is None:
        return
    context, started = run
    try:
        outcome = _STATES.get(state or "", str(state).lower())
        method_name, level = (
            ("warning", logging.WARNING) if outcome == "failure" else ("info", logging.INFO)
        )
        if _line.enabled(level):
            _line.write(
                method_name,
                level,
                "task_finished",
                {
                    "state": outcome,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "retries": int(getattr(request, "retries", 0) or 0),
                },
            )
    finally:
        delattr(request, _RUN_ATTRIBUTE)
        context.__exit__(None, None, None)


def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    # Sent in the worker's main process for a task discarded or terminated by revoke;
    # *request* is the task's request context, *sender* the task.
    if request is None:
        return
    headers = _task_headers(request)
    values = extract_context(headers)
    name = getattr(sender, "name", None) or headers.get("task")
    with request_context(
        values.pop("request_id", None),
        **values,
        **{TASK_ID_KEY: headers.get("id"), TASK_NAME_KEY: name},
    ):
        _log.warning(
            "task_finished",
            state="revoked",
            duration_ms=0.0,
            retries=int(headers.get("retries", 0) or 0),
        )


# --- health ----------------------------------------------------------------------------


def heartbeat_path(settings: Settings | None = None) -> Path:
    """The worker's heartbeat file: ``CELERY_HEARTBEAT_FILE``, else
    ``backend_kit-celery-worker.heartbeat`` in the temporary directory."""
    settings = settings if settings is not None else get_settings()
    if settings.celery_heartbeat_file is not None:
        return settings.celery_heartbeat_file
    return Path(tempfile.gettempdir()) / "backend_kit-celery-worker.heartbeat"


class HeartbeatStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: touches the heartbeat file every ``CELERY_HEARTBEAT_SECONDS``
    from the worker's own timer, so the file goes stale when the worker's loop stops
    turning, and removes it when the worker stops."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer_entry: Any = None
        self._path: Path | None = None

    def start(self, parent: Any) -> None:
        settings = _current_settings()
        self._path = heartbeat_path(settings)
        self._touch()
        self._timer_entry = parent.timer.call_repeatedly(
            settings.celery_heartbeat_seconds, self._touch
        )

    def stop(self, parent: Any) -> None:
        if self._timer_entry is not None:
            self._timer_entry.cancel()
            self._timer_entry = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    def _touch(self) -> None:
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._path.touch()
        except OSError as exc:
            _log.warning("celery_heartbeat_failed", path=str(self._path), reason=str(exc))


class _WorkerHealthRunner(HealthRunner):
    """Liveness from the heartbeat file's age; readiness from the registered checks."""

    def live(self) -> HealthReport:
        settings = self._active_settings()
        path = heartbeat_path(settings)
        limit = 3 * settings.celery_heartbeat_seconds
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:
            return self._report("live", "fail", output=f"no worker heartbeat at {path}")
        if age > limit:
            return self._report(
                "live", "fail", output=f"worker heartbeat is {age:.0f}s old (limit {limit:g}s)"
            )
        return self._report("live", "pass")


def broker_check(url: str, *, name: str = "broker", timeout: float | None = None) -> HealthCheck:
    """Connect to the Celery broker at *url* and close again: ``PING`` for Redis, an
    AMQP handshake for RabbitMQ, with connect and read timeouts of *timeout* seconds
    (default ``HEALTH_CHECK_TIMEOUT``)."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return redis_check(url, name=name, timeout=timeout, component_type="datastore")

    def run() -> None:
        from kombu.connection import Connection

        seconds = timeout if timeout is not None else get_settings().health_check_timeout
        connection = Connection(
            url,
            connect_timeout=seconds,
            transport_options={"read_timeout": seconds, "write_timeout": seconds},
        )
        try:
            # One attempt: connect() would retry after a pause the probe has no time for.
            connection.ensure_connection(max_retries=0)
        finally:
            connection.release()

    return HealthCheck(name, run=run, component_type="datastore", timeout=timeout)


def worker_health(
    registry: HealthRegistry | None = None, *, settings: Settings | None = None
) -> HealthRunner:
    """The health probes of a Celery worker container, for
    ``backend-kit health live|ready --registry backend_kit.celery:worker_health``.

    Liveness passes while the heartbeat file (`heartbeat_path`) is younger than three
    ``CELERY_HEARTBEAT_SECONDS``. Readiness runs a `broker_check` for
    ``CELERY_BROKER_URL`` plus *registry* (default: the checks the settings imply, as
    for the web process). Raises `ValueError` when ``CELERY_BROKER_URL`` is not set.
    """
    active = settings if settings is not None else get_settings()
    if active.celery_broker_url is None:
        raise ConfigError(
            [
                ConfigProblem(
                    "CELERY_BROKER_URL",
                    "the worker's health probes need the broker the worker consumes from, "
                    "for example redis://127.0.0.1:6379/1",
                    "not set",
                )
            ]
        )
    checks = registry if registry is not None else checks_from_settings(active)
    combined = HealthRegistry([broker_check(active.celery_broker_url.get_secret_value())])
    for check in checks:
        combined.add(check)
    return _WorkerHealthRunner(combined, cache_seconds=0, settings=settings)
