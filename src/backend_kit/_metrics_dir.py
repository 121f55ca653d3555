"""gunicorn's multiprocess metrics directory, prepared without importing
prometheus_client (which reads ``PROMETHEUS_MULTIPROC_DIR`` when it is imported)."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from ._settings import Settings

__all__ = ["MULTIPROC_VARIABLE", "mark_worker_dead", "prepare_multiprocess_dir"]

#: The environment variable prometheus_client reads for its multiprocess mode.
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(settings: Settings, directory: Path | None = None) -> Path:
    """Create (or empty) the directory the workers of this gunicorn master share and
    point ``PROMETHEUS_MULTIPROC_DIR`` at it; call in the master before any worker or
    application import. Returns the directory.

    *directory*, else ``METRICS_MULTIPROC_DIR`` names it; by default it is
    ``<tmp>/backend_kit-metrics-<uid>/<service>-<master pid>``, and the directories of
    masters of the same service that are no longer running are removed.

    Raises `ConfigError` when the directory is not the service user's own or is
    writable by others (a stranger could then inject metrics).
    """
    if directory is None:
        directory = settings.metrics_multiproc_dir
    if directory is not None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        parent = Path(tempfile.gettempdir()) / f"backend_kit-metrics-{os.getuid()}"
        parent.mkdir(mode=0o700, exist_ok=True)
        _check_private(parent)
        service = "".join(c if c.isalnum() or c in "-_." else "_" for c in settings.service_name)
        _remove_dead_masters(parent, service)
        directory = parent / f"{service}-{os.getpid()}"
        directory.mkdir(mode=0o700, exist_ok=True)
    _check_private(directory)
    # Counters of a previous run would otherwise be added to this one's.
    for entry in directory.iterdir():
        if entry.suffix == ".db" and entry.is_file():
            entry.unlink(missing_ok=True)
    os.environ[MULTIPROC_VARIABLE] = str(directory)
    return directory


def _check_private(directory: Path) -> None:
    info = directory.stat()
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = ConfigProblem(
            "METRICS_MULTIPROC_DIR",
            f"the metrics directory {directory} must belong to this user and be writable "
            "by nobody else: fix its owner and mode, or choose a private directory",
            "settings",
        )
        raise ConfigError([problem])


def _remove_dead_masters(parent: Path, service: str) -> None:
    for entry in parent.glob(f"{service}-*"):
        pid_text = entry.name.rsplit("-", 1)[-1]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            shutil.rmtree(entry, ignore_errors=True)
        except PermissionError:
            continue


def mark_worker_dead(pid: int) -> None:
    """Drop the live gauges of the worker *pid* that exited (its counters stay, so
    totals never go backwards when a worker is recycled)."""
    if not os.environ.get(MULTIPROC_VARIABLE):
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:  # the extra is missing: configure() says so in the workers
        return
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
