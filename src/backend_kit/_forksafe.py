"""What a forked child must not inherit from its parent's other threads.

`os.fork()` copies a lock in whatever state it was, but not the thread that held it:
a lock held mid-write by another thread of the parent stays held forever in the child,
and a health check or cache load running in the parent never finishes in the child.
Each concern of the library registers one function here that re-creates its locks and
forgets its in-flight work; they all run in the child, right after the fork, in the
order they were registered.
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import Any

__all__ = ["after_fork_in_child", "reset_in_child"]

_resets: list[Callable[[], None]] = []
# Objects (locks' owners: single-flight tables, breakers, health runners...) whose
# ``_reset_after_fork()`` runs in the child; held weakly, so they still die normally.
_objects: weakref.WeakSet[Any] = weakref.WeakSet()


def after_fork_in_child(reset: Callable[[], None]) -> Callable[[], None]:
    """Run *reset* in every child process right after `os.fork()`; returns *reset*, so
    it can be used as a decorator. Registering the same function twice runs it once."""
    if reset not in _resets:
        _resets.append(reset)
    return reset


def reset_in_child(owner: Any) -> None:
    """Call ``owner._reset_after_fork()`` in every child process right after `os.fork()`,
    for as long as *owner* lives."""
    _objects.add(owner)


def _run_resets() -> None:
    resets: list[Callable[[], None]] = list(_resets)
    resets.extend(owner._reset_after_fork for owner in list(_objects))
    for reset in resets:
        try:
            reset()
        except Exception as exc:  # one concern failing must not leave the others behind
            name = getattr(reset, "__qualname__", repr(reset))
            with suppress(Exception):
                sys.stderr.write(
                    f"backend_kit: resetting {name} after fork failed: {type(exc).__name__}\n"
                )


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_run_resets)
