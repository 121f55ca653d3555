"""A client-side read timeout for Django's PostgreSQL connections.

PostgreSQL cancels a slow statement itself (``statement_timeout``), but only a server
that still answers can do that: when the server, or something between it and the
client, stops answering while the kernel still acknowledges the packets, libpq waits
for ever. So every statement (and Django's connection health check) arms a deadline
with one watchdog thread; at the deadline the watchdog shuts the connection's socket
down, libpq's read returns at once with an error, and Django discards the connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from backend_kit._forksafe import after_fork_in_child

__all__ = ["READ_TIMEOUT_KEY", "install_read_timeout", "reset_watchdog_after_fork"]

#: The key of a ``DATABASES`` entry that holds the read timeout in seconds; set by
#: `database_from_url` for PostgreSQL.
READ_TIMEOUT_KEY = "BACKEND_KIT_READ_TIMEOUT"


class _Watchdog:
    """Shuts down sockets whose deadline passes; one daemon thread for the process."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._armed: dict[int, tuple[float, int]] = {}  # token -> (deadline, fd)
        self._fired: set[int] = set()
        self._next_token = 0
        self._thread: threading.Thread | None = None

    def arm(self, fd: int, seconds: float) -> int:
        with self._condition:
            self._next_token += 1
            token = self._next_token
            self._armed[token] = (time.monotonic() + seconds, fd)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="backend_kit-db-deadline", daemon=True
                )
                self._thread.start()
            self._condition.notify()
            return token

    def disarm(self, token: int) -> bool:
        """Forget *token*; True when its deadline had passed and the socket was shut."""
        with self._condition:
            self._armed.pop(token, None)
            if token in self._fired:
                self._fired.discard(token)
                return True
            return False

    def _run(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                for token, (deadline, fd) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[token]
                        self._fired.add(token)
                        _shut_down(fd)
                earliest = min((d for d, _ in self._armed.values()), default=now + 60.0)
                self._condition.wait(max(0.01, earliest - now))


def _shut_down(fd: int) -> None:
    # On a duplicate of the descriptor: shutdown() acts on the connection itself, and
    # closing the duplicate leaves libpq's own descriptor valid (no reuse races).
    with contextlib.suppress(OSError):
        duplicate = socket.socket(fileno=os.dup(fd))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()


_watchdog = _Watchdog()


@after_fork_in_child
def reset_watchdog_after_fork() -> None:
    """Give a forked child a watchdog of its own (the parent's thread does not exist
    there, and its condition may be held)."""
    global _watchdog
    _watchdog = _Watchdog()


def _arm(connection: Any, seconds: float) -> int | None:
    raw = getattr(connection, "connection", None)
    try:
        fd = raw.fileno() if raw is not None else -1
    except Exception:  # closed, or a driver without fileno()
        return None
    return _watchdog.arm(fd, seconds) if fd >= 0 else None


def _disarm(connection: Any, token: int | None) -> bool:
    """True when the deadline passed and the socket was shut down."""
    if token is None or not _watchdog.disarm(token):
        return False
    connection.errors_occurred = True  # Django opens a new connection next time
    return True


def _timeout_error(seconds: float) -> Exception:
    from django.db import OperationalError

    error: Exception = OperationalError(
        f"the database did not answer within {seconds:g} s (DATABASE_STATEMENT_TIMEOUT "
        "plus 1 s); the connection was closed"
    )
    return error


def _bounded_execute(seconds: float) -> Callable[..., Any]:
    def wrapper(
        execute: Callable[..., Any], sql: Any, params: Any, many: bool, context: Any
    ) -> Any:
        connection = context["connection"]
        token = _arm(connection, seconds)
        try:
            result = execute(sql, params, many, context)
        except Exception as exc:
            if _disarm(connection, token):
                raise _timeout_error(seconds) from exc
            raise
        if _disarm(connection, token):  # it returned anyway, but the socket is shut
            raise _timeout_error(seconds)
        return result

    return wrapper


def install_read_timeout(connection: Any) -> None:
    """Bound every statement and health check of the Django *connection* by the read
    timeout its ``DATABASES`` entry names; called for each new connection."""
    seconds = connection.settings_dict.get(READ_TIMEOUT_KEY)
    if not seconds or connection.vendor != "postgresql":
        return
    if getattr(connection, "_backend_kit_read_timeout", None) == seconds:
        return  # a reconnect of the same wrapper: already installed
    connection._backend_kit_read_timeout = seconds
    connection.execute_wrappers.append(_bounded_execute(float(seconds)))
    is_usable = connection.is_usable

    def bounded_is_usable() -> bool:
        # Django's health check of a reused connection runs outside execute_wrappers.
        token = _arm(connection, float(seconds))
        try:
            usable = bool(is_usable())
        finally:
            fired = _disarm(connection, token)
        return usable and not fired

    connection.is_usable = bounded_is_usable
