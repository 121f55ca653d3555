"""Retries with safe defaults, on tenacity.

Every retry is capped by a number of attempts *and* by a total time, backs off
exponentially with jitter, and is logged once, with the exception message passed
through the redaction policy. The exceptions to retry on are the caller's choice:
``on`` has no default.

The first attempt runs outside tenacity: a call that succeeds at once costs a
``try`` and a clock read. tenacity is imported and set up only after a failure that
is worth retrying.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeAlias, TypeVar, cast

from . import _metric_hooks
from ._forksafe import after_fork_in_child

if TYPE_CHECKING:
    import tenacity

__all__ = [
    "Attempt",
    "RetryOn",
    "RetryPolicy",
    "RetryingBlock",
    "override_retries",
    "retry",
    "retry_context",
]

P = ParamSpec("P")
T = TypeVar("T")

#: What ``on=`` accepts: an exception type, a tuple of them, or a predicate that gets
#: the exception and returns ``True`` (retry with backoff), ``False`` (give up) or a
#: number of seconds the server asked to wait (a ``Retry-After``).
RetryOn: TypeAlias = (
    "type[Exception] | tuple[type[Exception], ...] | Callable[[Exception], bool | float]"
)

_LOGGER_NAME = "backend_kit.retry"

# Set by `override_retries`: the attempts cap while a test suite has waiting turned off.
_testing_attempts: int | None = None
_testing_lock = threading.Lock()


@contextmanager
def override_retries(attempts: int = 1) -> Iterator[None]:
    """Inside the block, every retry policy waits 0 seconds between attempts and makes at
    most *attempts* attempts. Restores the previous state on exit; blocks may nest."""
    global _testing_attempts
    _check_attempts(attempts)
    with _testing_lock:
        previous, _testing_attempts = _testing_attempts, attempts
    try:
        yield
    finally:
        with _testing_lock:
            _testing_attempts = previous


class RetryPolicy:
    """How to retry: which exceptions, how many attempts, how long in total, how to wait.

    A policy is immutable and reusable. Calling it on a function (plain or ``async``)
    returns the function wrapped with retries; `context` retries a block of code.

    Raises `TypeError` or `ValueError` when an argument is invalid.

    Examples:
        >>> policy = RetryPolicy(on=ConnectionError, attempts=3, timeout=10.0)
        >>> @policy
        ... def ping() -> str:
        ...     return "pong"
        >>> ping()
        'pong'
    """

    _types: tuple[type[BaseException], ...] | None
    _predicate: Callable[[Exception], object] | None
    on: RetryOn
    attempts: int
    timeout: float
    wait_initial: float
    wait_max: float
    wait_jitter: float

    __slots__ = (
        "_predicate",
        "_types",
        "attempts",
        "on",
        "timeout",
        "wait_initial",
        "wait_jitter",
        "wait_max",
    )

    def __init__(
        self,
        *,
        on: RetryOn,
        attempts: int = 10,
        timeout: float = 45.0,
        wait_initial: float = 0.1,
        wait_max: float = 5.0,
        wait_jitter: float = 1.0,
    ) -> None:
        types, predicate = _parse_on(on)
        _check_attempts(attempts)
        for name, value in (
            ("timeout", timeout),
            ("wait_initial", wait_initial),
            ("wait_max", wait_max),
            ("wait_jitter", wait_jitter),
        ):
            _check_seconds(name, value)
        if wait_max < wait_initial:
            raise ValueError(
                f"retry: wait_max ({wait_max!r}) is smaller than wait_initial ({wait_initial!r}); "
                "raise wait_max or lower wait_initial"
            )
        # Frozen after this: a policy is shared between threads and decorated functions.
        frozen: tuple[tuple[str, object], ...] = (
            ("_types", types),
            ("_predicate", predicate),
            ("on", on),
            ("attempts", attempts),
            ("timeout", float(timeout)),
            ("wait_initial", float(wait_initial)),
            ("wait_max", float(wait_max)),
            ("wait_jitter", float(wait_jitter)),
        )
        for attribute, setting in frozen:
            object.__setattr__(self, attribute, setting)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(
            f"a RetryPolicy cannot be changed ({name}); build a new one with the values you need"
        )

    def __repr__(self) -> str:
        return (
            f"RetryPolicy(on={self.on!r}, attempts={self.attempts}, timeout={self.timeout}, "
            f"wait_initial={self.wait_initial}, wait_max={self.wait_max}, "
            f"wait_jitter={self.wait_jitter})"
        )

    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]:
        """Return *fn* wrapped with this policy, with the same signature. Coroutine
        functions get an ``async`` wrapper."""
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"retry cannot wrap the generator function {_qualname(fn)}: calling it "
                "never fails; retry the function that consumes it, or use retry_context()"
            )
        if inspect.iscoroutinefunction(fn):
            return cast("Callable[P, T]", self._wrap_async(fn))
        return self._wrap_sync(fn)

    def context(self) -> RetryingBlock:
        """Attempts for retrying a block: ``for attempt in policy.context(): with attempt:``
        (``async for`` in a coroutine). See `retry_context`."""
        return RetryingBlock(self, _caller_name(sys._getframe(1)))

    # -- the decorator ------------------------------------------------------------------

    def _wrap_sync(self, fn: Callable[P, T]) -> Callable[P, T]:
        policy = self

        @functools.wraps(fn)
        def call_with_retries(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.monotonic()
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                decision = policy._decide(exc)
                if decision is False or policy._max_attempts() == 1:
                    raise
                first_failure: Exception = exc
            # Outside the ``except`` so later failures are not chained to the first one.
            run = _Run(policy, _qualname(fn), started, first_failure, decision)
            for manager in run.managers():
                with manager:
                    return fn(*args, **kwargs)
            raise AssertionError("unreachable: tenacity either returns or raises")

        return call_with_retries

    def _wrap_async(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        policy = self

        @functools.wraps(fn)
        async def call_with_retries(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.monotonic()
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                decision = policy._decide(exc)
                if decision is False or policy._max_attempts() == 1:
                    raise
                first_failure: Exception = exc
            run = _Run(policy, _qualname(fn), started, first_failure, decision)
            async for manager in run.async_managers():
                with manager:
                    return await fn(*args, **kwargs)
            raise AssertionError("unreachable: tenacity either returns or raises")

        return call_with_retries

    # -- shared by the decorator and the block --------------------------------------------

    def _decide(self, exc: Exception) -> bool | float:
        """``False``: do not retry; ``True``: retry after backoff; a float: retry after
        that many seconds (the server asked for it). An open circuit is never retried:
        waiting out its backoff would only call into it again while it is open."""
        if type(exc).__name__ == "CircuitOpenError" and isinstance(exc, _circuit_open_error()):
            return False
        if self._types is not None:
            return isinstance(exc, self._types)
        assert self._predicate is not None
        verdict: object = self._predicate(exc)
        if isinstance(verdict, bool):
            return verdict
        if isinstance(verdict, (int, float)) and not math.isnan(verdict):
            return max(0.0, float(verdict))
        raise TypeError(
            f"the retry predicate {_qualname(self._predicate)} returned {verdict!r} for "
            f"{type(exc).__qualname__}; it must return True, False or the seconds to wait"
        )

    def _max_attempts(self) -> int:
        testing = _testing_attempts
        return self.attempts if testing is None else min(self.attempts, testing)

    def _backoff(self, failed_attempts: int) -> float:
        try:
            exponential = self.wait_initial * 2.0 ** (failed_attempts - 1)
        except OverflowError:
            exponential = self.wait_max
        return min(self.wait_max, exponential + random.uniform(0.0, self.wait_jitter))


if TYPE_CHECKING:
    from typing_extensions import TypedDict, Unpack

    class RetryOptions(TypedDict, total=False):
        """What `retry` and `retry_context` take besides *on*; see `RetryPolicy` for
        the defaults."""

        attempts: int
        timeout: float
        wait_initial: float
        wait_max: float
        wait_jitter: float


def retry(*, on: RetryOn, **options: Unpack[RetryOptions]) -> RetryPolicy:
    """Decorate a plain or ``async`` function so it is retried when it raises *on*.

    *on* is an exception type, a tuple of them, or a predicate ``(exc) -> bool | float``
    whose float return is the wait the server asked for (``Retry-After``). Waits grow
    as ``wait_initial * 2 ** (n - 1)`` plus up to *wait_jitter* seconds of jitter, capped
    at *wait_max*. At most *attempts* calls are made, and none starts after *timeout*
    seconds in total: a wait that would cross that deadline is not slept. The caller
    then gets the last exception itself. Each retry is logged once on
    ``backend_kit.retry``. The options and their defaults (``attempts=10``,
    ``timeout=45.0``, ``wait_initial=0.1``, ``wait_max=5.0``, ``wait_jitter=1.0``) are
    those of `RetryPolicy`, which this returns.

    Raises `TypeError` or `ValueError` when an argument is invalid.

    Examples:
        >>> import backend_kit
        >>> @backend_kit.retry(on=ConnectionError, attempts=3)
        ... def fetch() -> str:
        ...     return "ok"
        >>> fetch()
        'ok'
    """
    return RetryPolicy(on=on, **options)


def retry_context(*, on: RetryOn, **options: Unpack[RetryOptions]) -> RetryingBlock:
    """Retry a block of code with the same rules and options as `retry`.

    In a coroutine, iterate with ``async for``. The block's last exception propagates
    when the attempts or the time run out; other exceptions propagate at once.

    Examples:
        >>> import backend_kit
        >>> for attempt in backend_kit.retry_context(on=ConnectionError, attempts=3):
        ...     with attempt:
        ...         result = attempt.number
        >>> result
        1
    """
    return RetryingBlock(RetryPolicy(on=on, **options), _caller_name(sys._getframe(1)))


class Attempt:
    """One attempt at a retried block; use it as a context manager. ``number`` starts at 1."""

    __slots__ = ("_manager", "number")

    def __init__(self, number: int, manager: tenacity.AttemptManager | None) -> None:
        self.number = number
        self._manager = manager

    def __repr__(self) -> str:
        return f"<Attempt number={self.number}>"

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if self._manager is not None:
            return bool(self._manager.__exit__(exc_type, exc, traceback))
        return False


class _FirstAttempt(Attempt):
    """The first attempt of a block runs without tenacity, like a decorated call."""

    __slots__ = ("_block_failure", "_policy")

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__(1, None)
        self._policy = policy
        # (exception, decision) when the attempt failed with an error worth retrying.
        self._block_failure: tuple[Exception, bool | float] | None = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if not isinstance(exc, Exception):
            return False
        decision = self._policy._decide(exc)
        if decision is False or self._policy._max_attempts() == 1:
            return False
        self._block_failure = (exc, decision)
        return True


class RetryingBlock:
    """The attempts of a retried block, from `retry_context` or `RetryPolicy.context`.

    Iterate it with ``for`` in plain code and ``async for`` in a coroutine, and run the
    block inside ``with attempt:``.
    """

    __slots__ = ("_name", "_policy")

    def __init__(self, policy: RetryPolicy, name: str) -> None:
        self._policy = policy
        self._name = name  # the code running the block, for the retry log

    def __iter__(self) -> Iterator[Attempt]:
        started = time.monotonic()
        first = _FirstAttempt(self._policy)
        yield first
        if first._block_failure is None:
            return
        run = _Run(self._policy, self._name, started, *first._block_failure)
        for number, manager in enumerate(run.managers(), start=2):
            yield Attempt(number, manager)

    async def __aiter__(self) -> AsyncIterator[Attempt]:
        started = time.monotonic()
        first = _FirstAttempt(self._policy)
        yield first
        if first._block_failure is None:
            return
        run = _Run(self._policy, self._name, started, *first._block_failure)
        number = 1
        async for manager in run.async_managers():
            number += 1
            yield Attempt(number, manager)


class _Run:
    """One retried call after its first failure: tenacity set up with the policy's
    caps, the deadline counted from the start of the first attempt."""

    __slots__ = (
        "_deadline",
        "_first_decision",
        "_first_failure",
        "_max_attempts",
        "_name",
        "_next_wait",
        "_next_wait_for",
        "_policy",
        "_requested_wait",
        "_waits",
    )

    def __init__(
        self,
        policy: RetryPolicy,
        name: str,
        started: float,
        first_failure: Exception,
        first_decision: bool | float,
    ) -> None:
        self._policy = policy
        self._name = name
        self._deadline = started + policy.timeout
        self._first_failure = first_failure
        self._first_decision = first_decision
        self._max_attempts = policy._max_attempts()
        self._waits = _testing_attempts is None
        self._requested_wait: float | None = None
        self._next_wait = 0.0
        self._next_wait_for = 0

    def managers(self) -> Iterator[tenacity.AttemptManager]:
        """tenacity's attempts, starting with the second: the first failure is replayed
        into tenacity so it decides about it like any other."""
        import tenacity

        retrying = tenacity.Retrying(
            sleep=self._sleep, **self._tenacity_options(), before_sleep=self._log_retry
        )
        iterator = iter(retrying)
        self._replay_first_failure(next(iterator))
        yield from iterator

    async def async_managers(self) -> AsyncIterator[tenacity.AttemptManager]:
        import tenacity

        retrying = tenacity.AsyncRetrying(
            sleep=self._async_sleep, **self._tenacity_options(), before_sleep=self._log_retry
        )
        # Drive __anext__ by hand: a second __aiter__() would restart tenacity's state.
        iterator = retrying.__aiter__()
        self._replay_first_failure(await iterator.__anext__())
        while True:
            try:
                manager = await iterator.__anext__()
            except StopAsyncIteration:
                return
            yield manager

    def _tenacity_options(self) -> dict[str, Any]:
        return {
            "stop": self._should_stop,
            "wait": self._wait,
            "retry": self._should_retry,
            "reraise": True,
        }

    def _replay_first_failure(self, manager: tenacity.AttemptManager) -> None:
        exc = self._first_failure
        manager.__exit__(type(exc), exc, exc.__traceback__)

    # -- tenacity callbacks ---------------------------------------------------------------

    def _should_retry(self, state: tenacity.RetryCallState) -> bool:
        outcome = state.outcome
        if outcome is None or not outcome.failed:
            return False
        if state.attempt_number == 1:
            decision = self._first_decision
        else:
            exc = outcome.exception()
            if not isinstance(exc, Exception):
                return False  # KeyboardInterrupt, CancelledError: never retried
            decision = self._policy._decide(exc)
        self._requested_wait = None if isinstance(decision, bool) else decision
        return decision is not False

    def _wait(self, state: tenacity.RetryCallState) -> float:
        # tenacity asks for the wait and for the stop decision separately (in an order
        # that changed across versions): compute the jittered wait once per attempt.
        if self._next_wait_for != state.attempt_number:
            self._next_wait_for = state.attempt_number
            if not self._waits:
                self._next_wait = 0.0
            elif self._requested_wait is not None:
                self._next_wait = self._requested_wait
            else:
                self._next_wait = self._policy._backoff(state.attempt_number)
        return self._next_wait

    def _should_stop(self, state: tenacity.RetryCallState) -> bool:
        stop = (
            state.attempt_number >= self._max_attempts
            or time.monotonic() + self._wait(state) >= self._deadline
        )
        # tenacity asks only after a failure it would retry: stopping here is giving up.
        if stop and _metric_hooks.recorder is not None:
            _metric_hooks.recorder.retry_give_up(self._name)
        return stop

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None
        exc = state.outcome.exception()
        import structlog

        if _metric_hooks.recorder is not None:
            _metric_hooks.recorder.retry_attempt(self._name)
        structlog.get_logger(_LOGGER_NAME).warning(
            "retry_scheduled",
            function=self._name,
            attempt=state.attempt_number,
            max_attempts=self._max_attempts,
            wait=round(self._wait(state), 3),
            error_type=_qualname(type(exc)),
            error=_redacted_message(exc),
        )

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    async def _async_sleep(self, seconds: float) -> None:
        import asyncio

        # Sleep 0 still yields to the event loop, so other tasks progress between attempts.
        await asyncio.sleep(seconds)


def _circuit_open_error() -> type[Exception]:
    from ._breaker import CircuitOpenError

    return CircuitOpenError


def _redacted_message(exc: BaseException | None) -> str:
    from ._active import get_redactor
    from ._redact import Redactor

    try:
        redactor = get_redactor()
    except Exception:
        # Invalid settings must not turn a retry log into a crash; the default policy
        # still masks URLs, tokens and sensitive assignments.
        redactor = Redactor()
    return redactor.redact_text(str(exc))


def _parse_on(
    on: object,
) -> tuple[tuple[type[BaseException], ...] | None, Callable[[Exception], object] | None]:
    hint = (
        "pass an exception type (on=ConnectionError), a tuple of them "
        "(on=(ConnectionError, TimeoutError)) or a predicate (on=lambda exc: ...) that "
        "returns True, False or the seconds to wait"
    )
    if isinstance(on, type):
        if issubclass(on, BaseException):
            return (on,), None
        raise TypeError(f"retry: on={on.__qualname__} is not an exception type; {hint}")
    if isinstance(on, tuple):
        if not on:
            raise ValueError(f"retry: on=() retries nothing; {hint}")
        for item in on:
            if not (isinstance(item, type) and issubclass(item, BaseException)):
                raise TypeError(f"retry: on= contains {item!r}, which is not an exception type")
        return on, None
    if inspect.iscoroutinefunction(on):
        raise TypeError(
            f"retry: on={_qualname(on)} is a coroutine function; the predicate must be a plain "
            "function (it only inspects the exception, so it never needs to await)"
        )
    if callable(on):
        return None, on
    raise TypeError(f"retry: on={on!r} ({type(on).__qualname__}) is not usable; {hint}")


def _check_attempts(attempts: object) -> None:
    if isinstance(attempts, bool) or not isinstance(attempts, int):
        raise TypeError(f"retry: attempts must be an int, got {attempts!r}")
    if attempts < 1:
        raise ValueError(
            f"retry: attempts={attempts} must be at least 1 (1 means a single try, no retry)"
        )


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"retry: {name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"retry: {name}={value!r} must be a finite number of seconds >= 0")


def _qualname(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
    return f"{module}.{name}" if module and module != "builtins" else str(name)


def _caller_name(frame: FrameType) -> str:
    code = frame.f_code
    # co_qualname exists from Python 3.11; 3.10 has only the bare name.
    name = getattr(code, "co_qualname", code.co_name)
    module = frame.f_globals.get("__name__")
    return f"{module}.{name}" if module else str(name)


@after_fork_in_child
def _reset_after_fork() -> None:
    global _testing_lock
    _testing_lock = threading.Lock()
