"""Process lifecycle as probes see it: starting, serving, draining.

The state is process-wide because SIGTERM is: every runner in the process fails its
readiness at once when the process starts draining, while liveness keeps passing, so
the load balancer stops sending traffic before the process exits.
"""

from __future__ import annotations

import mmap
import os
import signal
import threading
from types import FrameType
from typing import Any

from backend_kit._forksafe import after_fork_in_child

__all__ = [
    "install_sigterm_handler",
    "is_draining",
    "is_started",
    "mark_started",
    "mark_starting",
    "reset_lifecycle",
    "start_draining",
]

_lock = threading.Lock()
_draining = threading.Event()
_started = threading.Event()
_started.set()
_installed: tuple[Any, Any] | None = None  # (our handler, the handler it chains to)
# One byte of memory shared with the processes forked after `share_draining()`: a
# pre-fork server's master starts draining, and every worker's readiness sees it.
_shared: mmap.mmap | None = None


def share_draining() -> None:
    """Share the draining state with every process forked from now on: when any of
    them (usually a pre-fork server's master) starts draining, all of them are.
    Call it once, before forking. Idempotent."""
    global _shared
    if _shared is None:
        shared = mmap.mmap(-1, 1)  # anonymous and MAP_SHARED: forked children see writes
        shared[0] = 1 if _draining.is_set() else 0
        _shared = shared


def start_draining() -> None:
    """Make readiness fail from now on (liveness keeps passing). Idempotent."""
    _draining.set()
    shared = _shared
    if shared is not None:
        shared[0] = 1


def is_draining() -> bool:
    """True once `start_draining` was called or SIGTERM was received (in this process,
    or in the one that called `share_draining` before forking this one)."""
    if _draining.is_set():
        return True
    shared = _shared
    return shared is not None and shared[0] == 1


def mark_starting() -> None:
    """Declare that the process is still starting: startup and readiness probes fail
    until `mark_started` is called. Liveness is unaffected."""
    _started.clear()


def mark_started() -> None:
    """Declare that startup is complete (the default state)."""
    _started.set()


def is_started() -> bool:
    """True unless `mark_starting` was called and `mark_started` not yet."""
    return _started.is_set()


def install_sigterm_handler(*, grace_seconds: float = 0.0) -> bool:
    """Start draining when SIGTERM arrives, then hand the signal on.

    A handler installed before (a server's own graceful shutdown) is called at once.
    If SIGTERM had its default meaning, the process exits *grace_seconds* later, so a
    load balancer has time to see readiness fail; if it was ignored, nothing more
    happens.

    Must be called from the main thread, as Python requires for signal handlers.
    Returns False when called elsewhere (nothing installed), True otherwise. Calling
    it twice installs one handler.
    """
    global _installed
    if threading.current_thread() is not threading.main_thread():
        return False
    with _lock:
        current = signal.getsignal(signal.SIGTERM)
        if _installed is not None and current is _installed[0]:
            return True
        previous = current

        grace_over = threading.Event()

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            start_draining()
            if callable(previous):
                previous(signum, frame)
            elif previous in (signal.SIG_DFL, None):
                if grace_seconds > 0 and not grace_over.is_set():
                    # Signal handlers can only be changed in the main thread, so the
                    # timer sends SIGTERM again and this handler exits the second time.
                    grace_over.set()
                    timer = threading.Timer(grace_seconds, _signal_main_thread, (signum,))
                    timer.daemon = True
                    timer.start()
                    return
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.raise_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_sigterm)
        _installed = (on_sigterm, previous)
        return True


def _signal_main_thread(signum: int) -> None:
    # Sent to the main thread itself, so a main thread blocked in a call wakes up.
    main = threading.main_thread().ident
    if hasattr(signal, "pthread_kill") and main is not None:
        signal.pthread_kill(main, signum)
    else:  # pragma: no cover - Windows
        os.kill(os.getpid(), signum)


def reset_lifecycle() -> None:
    """Back to serving and not draining, with the previous SIGTERM handler restored.
    Meant for tests."""
    global _installed, _shared
    _draining.clear()
    _started.set()
    _shared = None
    with _lock:
        if _installed is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) is _installed[0]:
                previous = _installed[1]
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            _installed = None


@after_fork_in_child
def _reset_after_fork() -> None:
    global _lock, _draining, _started
    # Fresh objects carrying the same state: the old ones' internal locks may be held.
    draining, started = threading.Event(), threading.Event()
    if _draining.is_set():
        draining.set()
    if _started.is_set():
        started.set()
    _lock, _draining, _started = threading.Lock(), draining, started
