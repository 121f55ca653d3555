"""RQ: jobs carry the request that enqueued them; the worker logs like the web process.

- `ContextQueue`: a `rq.Queue` that writes the current context into each job's
  ``meta`` (`backend_kit.context.inject_context`) and describes a job by its function's
  name only, so its arguments never reach RQ's log lines.
- `ContextWorker`: a `rq.Worker` that configures backend_kit (logging and Sentry from
  the active settings) instead of RQ's own log handlers, runs each job inside
  `backend_kit.request_context` with the enqueuer's request id (or a new one),
  ``task_id`` (the job id) and ``task_name`` (the function), logs one
  ``task_finished`` event per run, and keeps job arguments out of its error lines.

Run the worker with ``rq worker -w backend_kit.rq.ContextWorker``, or build one in a
script of your own.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from typing import Any

try:
    from rq import Queue, Worker
    from rq.job import JobStatus
except ImportError:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'backend_kit.rq needs RQ; install it with: pip install "backend-kit[rq]"'
    ) from None

from ._context import TASK_TAG_KEYS, request_context
from ._logging import get_logger, is_logging_configured
from .context import extract_context, inject_context

__all__ = ["ContextQueue", "ContextWorker"]

TASK_ID_KEY, TASK_NAME_KEY = TASK_TAG_KEYS
_RQ_LOGGERS = ("rq.worker", "rq.job")
# Attributes RQ's exception line adds to its record (the job's arguments).
_ARGUMENT_ATTRIBUTES = ("arguments", "kwargs")

# Where a job keeps the number of retries it was allowed (RQ keeps only what is left).
_RETRIES_META = "backend_kit_retries"

_log = get_logger("backend_kit.rq")


def _function_name(func: Any) -> str:
    if isinstance(func, str):
        return func
    module = getattr(func, "__module__", None)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    return f"{module}.{name}" if module else str(name)


class ContextQueue(Queue):
    """A `rq.Queue` whose jobs carry the current context in ``job.meta`` and are
    described without their arguments."""

    def create_job(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("description") is None:
            kwargs["description"] = _function_name(func)
        job = super().create_job(func, *args, **kwargs)
        inject_context(job.meta)
        if isinstance(getattr(job, "retries_left", None), int):
            job.meta[_RETRIES_META] = job.retries_left
        return job


# Set while RQ's own exception handling runs: its error line (the traceback as text,
# the job's arguments as extras) is replaced by the worker's own.
_handling_exception: ContextVar[bool] = ContextVar("backend_kit_rq_handling", default=False)


def _hide_arguments(record: logging.LogRecord) -> bool:
    if _handling_exception.get() and record.levelno >= logging.ERROR:
        return False
    for attribute in _ARGUMENT_ATTRIBUTES:
        record.__dict__.pop(attribute, None)
    return True


class ContextWorker(Worker):
    """A `rq.Worker` that logs through backend_kit and runs each job in its context.

    Creating one configures backend_kit from the active settings (unless it is
    configured already) and hands RQ's loggers to its pipeline.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if not is_logging_configured():
            from ._configure import configure

            configure()
        for name in _RQ_LOGGERS:
            logger = logging.getLogger(name)
            # RQ's command line gave these loggers handlers of their own and stopped
            # them from propagating; backend_kit's root handler formats them instead.
            logger.handlers = []
            logger.propagate = True
            if _hide_arguments not in logger.filters:
                logger.addFilter(_hide_arguments)
        super().__init__(*args, **kwargs)

    def perform_job(self, job: Any, queue: Any, *args: Any, **kwargs: Any) -> bool:
        values = extract_context(job.meta)
        with request_context(
            values.pop("request_id", None),
            **values,
            **{TASK_ID_KEY: job.id, TASK_NAME_KEY: job.func_name},
        ):
            started = time.perf_counter()
            succeeded = False
            try:
                succeeded = bool(super().perform_job(job, queue, *args, **kwargs))
                return succeeded
            finally:
                self._log_finished(job, succeeded, started)

    def handle_exception(self, job: Any, *exc_info: Any, **kwargs: Any) -> Any:
        """RQ's handling (Sentry's RQ integration reports the exception there), with one
        error line of backend_kit's: the exception structured, the arguments left out.
        A job that will be retried logs a warning instead, and reaches Sentry only
        when its last attempt fails."""
        token = _handling_exception.set(True)
        try:
            result = super().handle_exception(job, *exc_info, **kwargs)
        finally:
            _handling_exception.reset(token)
        will_retry = bool(getattr(job, "retries_left", None))
        (_log.warning if will_retry else _log.error)(
            "task_raised", exc_info=exc_info if len(exc_info) == 3 else True
        )
        return result

    @staticmethod
    def _log_finished(job: Any, succeeded: bool, started: float) -> None:
        if succeeded:
            state = "success"
        else:
            status = job.get_status(refresh=True)
            state = "retry" if status in (JobStatus.QUEUED, JobStatus.SCHEDULED) else "failure"
        retries = 0
        allowed, left = job.meta.get(_RETRIES_META), getattr(job, "retries_left", None)
        if isinstance(allowed, int) and isinstance(left, int):
            # RQ counts down what is left; the attempts before this one are the rest.
            retries = allowed - left - (1 if state == "retry" else 0)
        (_log.warning if state == "failure" else _log.info)(
            "task_finished",
            state=state,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            retries=retries,
        )
