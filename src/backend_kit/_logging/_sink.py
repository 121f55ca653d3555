"""Where rendered lines go: one write per line, under a lock that survives fork, and
optionally a lock shared with sibling processes; failures are counted, never raised."""

from __future__ import annotations

import atexit
import codecs
import io
import os
import sys
import threading
import time
from contextlib import suppress
from typing import TextIO

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows, which has no pre-fork servers either
    fcntl = None  # type: ignore[assignment]

from .. import _metric_hooks
from .._forksafe import after_fork_in_child

#: Seconds a log call waits for its turn to write before it gives the line up.
WRITE_LOCK_TIMEOUT = 5.0
#: Seconds a writer waits for the lock it shares with other processes (see
#: `use_process_lock`); then it writes anyway: a line that may interleave beats a
#: service that hangs because another process stopped while holding the lock.
PROCESS_LOCK_TIMEOUT = 2.0
#: Dropped lines are reported on stderr at most once per this many seconds.
DROP_REPORT_INTERVAL = 10.0


class FailureReport:
    """Counts failures of one kind and says so on stderr at most once per interval,
    with the number since the previous report: never through logging, which may be
    the very thing failing."""

    __slots__ = ("_last_reason", "_last_report", "_unreported", "count", "what")

    def __init__(self, what: str) -> None:
        self.what = what
        self.count = 0
        self._unreported = 0
        self._last_reason = ""
        self._last_report: float | None = None

    def record(self, reason: str) -> None:
        self.count += 1
        self._unreported += 1
        self._last_reason = reason
        now = time.monotonic()
        if self._last_report is None or now - self._last_report >= DROP_REPORT_INTERVAL:
            self._last_report = now
            self._write()

    def report_remaining(self) -> None:
        """Report what failed since the last report, if anything (at exit, where the
        interval would otherwise swallow the last failures)."""
        if self._unreported:
            self._write()

    def _write(self) -> None:
        unreported, self._unreported = self._unreported, 0
        message = (
            f"backend_kit: {unreported} {self.what} ({self.count} since start); "
            f"last reason: {self._last_reason[:200]}\n"
        )
        with suppress(Exception):  # stderr may be broken too: nowhere left to say it
            os.write(2, message.encode("utf-8", "replace"))

    def reset(self) -> None:
        self.count = self._unreported = 0
        self._last_reason = ""
        self._last_report = None


#: Log events whose copy could not be forwarded to Sentry (the line was still written).
forwarding_failures = FailureReport("log event(s) could not be forwarded to Sentry")


class ProcessLock:
    """An exclusive POSIX record lock on a file descriptor that several processes share.

    The lock belongs to the process that took it, so processes forked after the file
    was opened exclude each other through the one descriptor they all inherited, and
    the kernel releases the lock of a process that dies while holding it.
    """

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise RuntimeError("a lock shared between processes needs fcntl (POSIX)")
        self.fd = fd

    def acquire(self) -> bool:
        """Take the lock, waiting at most `PROCESS_LOCK_TIMEOUT`; False if not taken."""
        try:
            fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            pass
        deadline = time.monotonic() + PROCESS_LOCK_TIMEOUT
        pause = 0.0001
        while True:
            time.sleep(pause)
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except OSError:
                if time.monotonic() >= deadline:
                    return False
            pause = min(pause * 2, 0.002)

    def release(self) -> None:
        with suppress(OSError):
            fcntl.lockf(self.fd, fcntl.LOCK_UN)


class Sink:
    """Writes rendered lines to a text stream, one ``write`` per line, under a lock
    (and, when set, a lock shared with the other processes writing to the same pipe).

    A write never raises: a line that cannot be written (a closed or broken stdout, a
    full disk, a lock not obtained in time) is counted in ``dropped`` and reported on
    stderr at most once per `DROP_REPORT_INTERVAL`.
    """

    __slots__ = ("_fd_of", "_lock", "failures", "process_lock", "stream", "unlocked_writes")

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        # The last stream `write_bytes` saw and its descriptor (-1: write it as text).
        self._fd_of: tuple[object, int] = (None, -1)
        self.process_lock: ProcessLock | None = None
        self._lock = threading.Lock()
        self.failures = FailureReport("log line(s) could not be written")
        self.unlocked_writes = 0

    @property
    def dropped(self) -> int:
        """Lines not written since the process started (or forked)."""
        return self.failures.count

    def write(self, line: str) -> None:
        # None means "whatever sys.stdout is right now", as structlog's PrintLogger does.
        stream = self.stream if self.stream is not None else sys.stdout
        lock = self._lock
        # Untimed first: a timed acquire costs more than the rest of the write.
        if not lock.acquire(False) and not lock.acquire(True, WRITE_LOCK_TIMEOUT):
            self.drop("waited too long for the log lock")
            return
        try:
            shared = self.process_lock
            if shared is None:
                stream.write(line + "\n")
                stream.flush()
            else:
                self._write_shared(stream, line, shared)
        except Exception as exc:
            lock.release()
            self.drop(f"{type(exc).__name__}: {exc}")
            return
        lock.release()

    def write_bytes(self, data: bytes) -> None:
        """Write *data*, one whole UTF-8 line with its ``\\n``, as `write` writes its
        text: under the same locks, counted when it fails, never raising.

        To a plain file or pipe opened as UTF-8 text (``sys.stdout`` and ``open()``'s
        text files), it goes straight to the file descriptor in one ``os.write`` after
        a flush of the stream, so whatever the stream already holds goes first; any
        other stream (``StringIO``, capture wrappers, other encodings) gets the text.
        """
        stream = self.stream if self.stream is not None else sys.stdout
        known, fd = self._fd_of
        if known is not stream:
            fd = _descriptor_of(stream)
            self._fd_of = (stream, fd)
        if fd < 0:
            self.write(data[:-1].decode())
            return
        lock = self._lock
        if not lock.acquire(False) and not lock.acquire(True, WRITE_LOCK_TIMEOUT):
            self.drop("waited too long for the log lock")
            return
        try:
            shared = self.process_lock
            if shared is None:
                stream.flush()  # raises on a closed stream, before its fd can be reused
                _write_all(fd, data)
            else:
                locked = shared.acquire()
                if not locked:
                    self.unlocked_writes += 1
                try:
                    stream.flush()
                    _write_all(fd, data)
                finally:
                    if locked:
                        shared.release()
        except Exception as exc:
            lock.release()
            self.drop(f"{type(exc).__name__}: {exc}")
            return
        lock.release()

    def _write_shared(self, stream: TextIO, line: str, shared: ProcessLock) -> None:
        locked = shared.acquire()
        if not locked:
            self.unlocked_writes += 1
        try:
            stream.write(line + "\n")
            stream.flush()
        finally:
            if locked:
                shared.release()

    def drop(self, reason: str) -> None:
        """Count one line that was not written; say so on stderr when a report is due."""
        self.failures.record(reason)
        recorder = _metric_hooks.recorder
        if recorder is not None:
            recorder.log_line_dropped()

    def reset_after_fork(self) -> None:
        # Another thread of the parent may have held the lock mid-write.
        self._lock = threading.Lock()
        self._fd_of = (None, -1)
        self.failures.reset()
        self.unlocked_writes = 0


def _descriptor_of(stream: object) -> int:
    """The file descriptor under *stream* when writing UTF-8 bytes to it is the same
    as writing the text: a plain `io.TextIOWrapper` (not a subclass, which may change
    ``write``) over a file, buffered or not, encoding UTF-8, with no newline translation on
    this platform; else -1."""
    if type(stream) is not io.TextIOWrapper or os.linesep != "\n":
        return -1
    try:
        buffer = stream.buffer
        # A buffered file, or the file itself (stdout under PYTHONUNBUFFERED).
        raw = buffer.raw if type(buffer) is io.BufferedWriter else buffer
        if type(raw) is not io.FileIO:
            return -1
        if codecs.lookup(stream.encoding).name != "utf-8":
            return -1
        return stream.fileno()
    except Exception:  # closed, detached: the text path says why when it writes
        return -1


def _write_all(fd: int, data: bytes) -> None:
    written = os.write(fd, data)
    # A pipe or file takes a blocking write whole; a signal may still cut one short.
    while written < len(data):
        data = data[written:]
        written = os.write(fd, data)


sink = Sink(None)


def use_process_lock(fd: int | None) -> None:
    """Serialise writes with the other processes that share the file descriptor *fd*
    (opened once, before they were forked), so long lines from several processes on
    one pipe never interleave; ``None`` stops doing so."""
    sink.process_lock = None if fd is None else ProcessLock(fd)


@after_fork_in_child
def _reset_after_fork() -> None:
    sink.reset_after_fork()
    forwarding_failures.reset()


@atexit.register
def _report_failures_at_exit() -> None:
    sink.failures.report_remaining()
    forwarding_failures.report_remaining()
