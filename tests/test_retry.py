"""Retries: caps, waits, predicates, async, logging, redaction and the testing switch."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tenacity
from structlog.testing import capture_logs

import backend_kit
from backend_kit import RetryPolicy, retry, retry_context
from backend_kit.testing import override_settings, retries

# Waits small enough that a test that really sleeps stays fast.
FAST = {"wait_initial": 0.001, "wait_max": 0.001, "wait_jitter": 0.0}


class Flaky:
    """A callable that raises the given exceptions in turn, then returns "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0
        self.raised: list[BaseException] = []

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            exc = self.failures.pop(0)
            self.raised.append(exc)
            raise exc
        return "ok"


def always_failing(exc_type: type[Exception] = ConnectionError) -> Flaky:
    return Flaky(*(exc_type(f"failure {n}") for n in range(1, 1001)))


def retry_events(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in logs if event["event"] == "retry_scheduled"]


@pytest.fixture
def tenacity_setups(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts every construction of a tenacity retrying object or call state."""
    counts = {"retrying": 0, "call_state": 0}
    retrying_init = tenacity.BaseRetrying.__init__
    state_init = tenacity.RetryCallState.__init__

    def counting_retrying(self: Any, *args: Any, **kwargs: Any) -> None:
        counts["retrying"] += 1
        retrying_init(self, *args, **kwargs)

    def counting_state(self: Any, *args: Any, **kwargs: Any) -> None:
        counts["call_state"] += 1
        state_init(self, *args, **kwargs)

    monkeypatch.setattr(tenacity.BaseRetrying, "__init__", counting_retrying)
    monkeypatch.setattr(tenacity.RetryCallState, "__init__", counting_state)
    return counts


# -- the success path ------------------------------------------------------------------


def test_first_try_success_never_enters_tenacity(tenacity_setups: dict[str, int]) -> None:
    ok = Flaky()
    wrapped = retry(on=ConnectionError)(ok)

    assert [wrapped() for _ in range(100)] == ["ok"] * 100

    for attempt in retry_context(on=ConnectionError):
        with attempt:
            pass

    async def main() -> str:
        async_ok = retry(on=ConnectionError)(_async(Flaky()))
        async for attempt in retry_context(on=ConnectionError):
            with attempt:
                pass
        return await async_ok()

    assert asyncio.run(main()) == "ok"
    assert tenacity_setups == {"retrying": 0, "call_state": 0}


def test_a_retry_does_go_through_tenacity(tenacity_setups: dict[str, int]) -> None:
    """The counterpart of the test above: the spy does see tenacity when it runs."""
    flaky = Flaky(ConnectionError("once"))
    assert retry(on=ConnectionError, **FAST)(flaky)() == "ok"
    assert tenacity_setups["retrying"] == 1
    assert flaky.calls == 2


def test_non_matching_exception_is_raised_at_once_without_tenacity(
    tenacity_setups: dict[str, int],
) -> None:
    flaky = Flaky(KeyError("nope"))
    with capture_logs() as logs, pytest.raises(KeyError):
        retry(on=ConnectionError, **FAST)(flaky)()
    assert flaky.calls == 1
    assert logs == []
    assert tenacity_setups["retrying"] == 0


# -- caps -------------------------------------------------------------------------------


def test_retries_until_success() -> None:
    flaky = Flaky(ConnectionError("a"), TimeoutError("b"))
    wrapped = retry(on=(ConnectionError, TimeoutError), **FAST)(flaky)
    assert wrapped() == "ok"
    assert flaky.calls == 3


def test_attempts_cap_and_the_original_exception_is_raised() -> None:
    flaky = always_failing()
    wrapped = retry(on=ConnectionError, attempts=4, **FAST)(flaky)

    with pytest.raises(ConnectionError) as info:
        wrapped()

    assert flaky.calls == 4
    assert info.value is flaky.raised[-1]
    assert not isinstance(info.value, tenacity.RetryError)
    # Not chained to earlier attempts or to tenacity's internals.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_attempts_of_one_means_a_single_try() -> None:
    flaky = always_failing()
    with pytest.raises(ConnectionError):
        retry(on=ConnectionError, attempts=1)(flaky)()
    assert flaky.calls == 1


def test_total_time_cap_stops_retrying() -> None:
    flaky = always_failing()
    wrapped = retry(
        on=ConnectionError,
        attempts=1000,
        timeout=0.5,
        wait_initial=0.05,
        wait_max=0.05,
        wait_jitter=0.0,
    )(flaky)

    started = time.monotonic()
    with pytest.raises(ConnectionError) as info:
        wrapped()
    elapsed = time.monotonic() - started

    # About 0.5 / 0.05 = 10 calls; a slow machine makes fewer, never many more.
    assert 2 <= flaky.calls <= 11
    assert info.value is flaky.raised[-1]
    assert elapsed < 0.5 + 2.0


def test_a_wait_that_would_cross_the_deadline_is_not_slept() -> None:
    flaky = always_failing()
    wrapped = retry(on=ConnectionError, timeout=1.0, wait_initial=30.0, wait_max=30.0)(flaky)

    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(ConnectionError):
        wrapped()

    assert flaky.calls == 1
    assert retry_events(logs) == []
    assert time.monotonic() - started < 10.0


def test_the_first_attempt_counts_against_the_timeout() -> None:
    calls = 0

    @retry(on=ConnectionError, timeout=0.2, **FAST)
    def slow_failure() -> None:
        nonlocal calls
        calls += 1
        time.sleep(0.3)
        raise ConnectionError("slow")

    with pytest.raises(ConnectionError):
        slow_failure()
    assert calls == 1


def test_backoff_grows_and_is_capped() -> None:
    flaky = always_failing()
    wrapped = retry(
        on=ConnectionError, attempts=6, wait_initial=0.001, wait_max=0.004, wait_jitter=0.0
    )(flaky)
    with capture_logs() as logs, pytest.raises(ConnectionError):
        wrapped()
    assert [e["wait"] for e in retry_events(logs)] == [0.001, 0.002, 0.004, 0.004, 0.004]


def test_jitter_stays_within_bounds() -> None:
    flaky = always_failing()
    wrapped = retry(
        on=ConnectionError, attempts=8, wait_initial=0.001, wait_max=0.01, wait_jitter=0.002
    )(flaky)
    with capture_logs() as logs, pytest.raises(ConnectionError):
        wrapped()
    waits = [e["wait"] for e in retry_events(logs)]
    assert len(waits) == 7
    assert all(0.001 <= w <= 0.01 for w in waits)


# -- predicates -------------------------------------------------------------------------


class RateLimited(Exception):
    def __init__(self, retry_after: float | None) -> None:
        super().__init__("429 Too Many Requests")
        self.retry_after = retry_after


def honour_retry_after(exc: Exception) -> bool | float:
    if isinstance(exc, RateLimited):
        return exc.retry_after if exc.retry_after is not None else True
    return False


def test_predicate_server_requested_wait_replaces_backoff() -> None:
    flaky = Flaky(RateLimited(0.02), RateLimited(None))
    # A large backoff would make this test slow if the requested wait were ignored.
    wrapped = retry(on=honour_retry_after, wait_initial=0.001, wait_max=5.0, wait_jitter=0.0)(flaky)
    with capture_logs() as logs:
        assert wrapped() == "ok"
    # The second wait is the ordinary backoff for a second failure.
    assert [e["wait"] for e in retry_events(logs)] == [0.02, 0.002]


def test_server_requested_wait_is_bounded_by_the_timeout() -> None:
    flaky = Flaky(RateLimited(60.0))
    wrapped = retry(on=honour_retry_after, timeout=1.0)(flaky)
    started = time.monotonic()
    with pytest.raises(RateLimited):
        wrapped()
    assert flaky.calls == 1
    assert time.monotonic() - started < 10.0


def test_predicate_false_is_not_retried() -> None:
    flaky = Flaky(ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        retry(on=honour_retry_after, **FAST)(flaky)()
    assert flaky.calls == 1


def test_predicate_sees_every_failure_once() -> None:
    seen: list[str] = []

    def predicate(exc: Exception) -> bool:
        seen.append(str(exc))
        return True

    flaky = Flaky(OSError("1"), OSError("2"), OSError("3"))
    assert retry(on=predicate, **FAST)(flaky)() == "ok"
    assert seen == ["1", "2", "3"]


def test_predicate_with_a_wrong_return_value_is_a_clear_error() -> None:
    flaky = Flaky(OSError("x"))
    with pytest.raises(TypeError, match="must return True, False or the seconds"):
        retry(on=lambda exc: None, **FAST)(flaky)()  # type: ignore[arg-type,return-value]


# -- async ------------------------------------------------------------------------------


def _async(flaky: Flaky) -> Any:
    async def call() -> str:
        await asyncio.sleep(0)
        return flaky()

    return call


def test_async_retries_until_success() -> None:
    flaky = Flaky(ConnectionError("a"), ConnectionError("b"))
    wrapped = retry(on=ConnectionError, **FAST)(_async(flaky))
    assert inspect.iscoroutinefunction(wrapped)
    assert asyncio.run(wrapped()) == "ok"
    assert flaky.calls == 3


def test_async_raises_the_original_exception_after_the_last_attempt() -> None:
    flaky = always_failing()
    wrapped = retry(on=ConnectionError, attempts=3, **FAST)(_async(flaky))
    with pytest.raises(ConnectionError) as info:
        asyncio.run(wrapped())
    assert flaky.calls == 3
    assert info.value is flaky.raised[-1]


def test_async_total_time_cap() -> None:
    flaky = always_failing()
    wrapped = retry(
        on=ConnectionError,
        attempts=1000,
        timeout=0.3,
        wait_initial=0.05,
        wait_max=0.05,
        wait_jitter=0.0,
    )(_async(flaky))
    with pytest.raises(ConnectionError):
        asyncio.run(wrapped())
    assert 2 <= flaky.calls <= 7


def test_async_waits_do_not_block_other_tasks() -> None:
    ticks = 0
    ticks_seen_by_attempt: list[int] = []

    @retry(on=ConnectionError, wait_initial=0.2, wait_max=0.2, wait_jitter=0.0)
    async def fails_once() -> str:
        ticks_seen_by_attempt.append(ticks)
        if len(ticks_seen_by_attempt) == 1:
            raise ConnectionError("a")
        return "ok"

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(5):
            await asyncio.sleep(0.01)
            ticks += 1

    async def main() -> str:
        result, _ = await asyncio.gather(fails_once(), ticker())
        return result

    assert asyncio.run(main()) == "ok"
    # The ticker ran while the retry waited, so the wait did not block the loop.
    assert ticks_seen_by_attempt[0] == 0
    assert ticks_seen_by_attempt[1] >= 1


def test_cancellation_is_never_retried() -> None:
    calls = 0

    @retry(on=BaseException, **FAST)
    async def hangs() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(hangs())
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert calls == 1


# -- blocks and policies ----------------------------------------------------------------


def test_retry_context_retries_a_block() -> None:
    flaky = Flaky(ConnectionError("a"), ConnectionError("b"))
    numbers = []
    for attempt in retry_context(on=ConnectionError, **FAST):
        with attempt:
            numbers.append(attempt.number)
            result = flaky()
    assert result == "ok"
    assert numbers == [1, 2, 3]


def test_retry_context_raises_the_original_exception() -> None:
    flaky = always_failing()

    def run_block() -> None:
        for attempt in retry_context(on=ConnectionError, attempts=3, **FAST):
            with attempt:
                flaky()

    with pytest.raises(ConnectionError) as info:
        run_block()
    assert flaky.calls == 3
    assert info.value is flaky.raised[-1]


def test_retry_context_lets_other_exceptions_through() -> None:
    flaky = Flaky(ConnectionError("a"), KeyError("b"))

    def run_block() -> None:
        for attempt in retry_context(on=ConnectionError, **FAST):
            with attempt:
                flaky()

    with pytest.raises(KeyError):
        run_block()
    assert flaky.calls == 2


def test_async_retry_context() -> None:
    flaky = Flaky(ConnectionError("a"))

    async def main() -> list[int]:
        numbers = []
        async for attempt in retry_context(on=ConnectionError, **FAST):
            with attempt:
                numbers.append(attempt.number)
                await _async(flaky)()
        return numbers

    assert asyncio.run(main()) == [1, 2]


def test_retry_context_logs_the_enclosing_function() -> None:
    flaky = Flaky(ConnectionError("a"))
    with capture_logs() as logs:
        for attempt in retry_context(on=ConnectionError, **FAST):
            with attempt:
                flaky()
    [event] = retry_events(logs)
    assert event["function"] == f"{__name__}.test_retry_context_logs_the_enclosing_function"


def test_a_policy_is_reusable_for_functions_and_blocks() -> None:
    policy = RetryPolicy(on=ConnectionError, attempts=2, **FAST)
    first, second = always_failing(), Flaky(ConnectionError("x"))
    with pytest.raises(ConnectionError):
        policy(first)()
    assert policy(second)() == "ok"
    third = Flaky(ConnectionError("y"))
    for attempt in policy.context():
        with attempt:
            third()
    assert (first.calls, second.calls, third.calls) == (2, 2, 2)
    assert "attempts=2" in repr(policy)


def test_decorated_functions_and_methods_keep_their_signature() -> None:
    @retry(on=ConnectionError)
    def fetch(url: str, *, timeout: float = 1.0) -> str:
        """Fetch it."""
        return f"{url} {timeout}"

    class Client:
        @retry(on=ConnectionError)
        def get(self, path: str) -> str:
            return path

    assert fetch("u", timeout=2.0) == "u 2.0"
    assert str(inspect.signature(fetch)) == "(url: 'str', *, timeout: 'float' = 1.0) -> 'str'"
    assert fetch.__name__ == "fetch"
    assert fetch.__doc__ == "Fetch it."
    assert Client().get("/x") == "/x"


# -- logging and redaction --------------------------------------------------------------


def test_each_retry_is_logged_once_with_its_details() -> None:
    flaky = Flaky(ConnectionError("refused"), TimeoutError("slow"))

    @retry(on=(ConnectionError, TimeoutError), wait_initial=0.001, wait_max=1.0, wait_jitter=0.0)
    def call_service() -> str:
        return flaky()

    with capture_logs() as logs:
        assert call_service() == "ok"

    assert retry_events(logs) == [
        {
            "event": "retry_scheduled",
            "log_level": "warning",
            "function": f"{__name__}.{call_service.__qualname__}",
            "attempt": 1,
            "max_attempts": 10,
            "wait": 0.001,
            "error_type": "ConnectionError",
            "error": "refused",
        },
        {
            "event": "retry_scheduled",
            "log_level": "warning",
            "function": f"{__name__}.{call_service.__qualname__}",
            "attempt": 2,
            "max_attempts": 10,
            "wait": 0.002,
            "error_type": "TimeoutError",
            "error": "slow",
        },
    ]


def test_the_last_failure_is_not_logged_as_a_retry() -> None:
    flaky = always_failing()
    with capture_logs() as logs, pytest.raises(ConnectionError):
        retry(on=ConnectionError, attempts=3, **FAST)(flaky)()
    assert [e["attempt"] for e in retry_events(logs)] == [1, 2]


def test_secrets_in_exception_messages_are_redacted() -> None:
    token = "tok-9f8e7d6c5b4a"
    flaky = Flaky(
        ConnectionError(f"auth failed with {token}"),
        ConnectionError("connect to postgresql://app:hunter2@db:5432/app failed"),
        ConnectionError("rejected with Bearer abc.def.ghi"),
    )
    with override_settings(health_token=token), capture_logs() as logs:
        assert retry(on=ConnectionError, **FAST)(flaky)() == "ok"

    messages = [e["error"] for e in retry_events(logs)]
    assert len(messages) == 3
    text = " ".join(messages)
    for secret in (token, "hunter2", "abc.def.ghi"):
        assert secret not in text
    assert "postgresql://app:***@db:5432/app" in messages[1]


# -- the testing switch -----------------------------------------------------------------


def test_testing_switch_caps_attempts_and_never_sleeps() -> None:
    slow_policy = RetryPolicy(on=ConnectionError, wait_initial=30.0, wait_max=30.0)
    flaky = always_failing()
    started = time.monotonic()
    with retries():
        with pytest.raises(ConnectionError):
            slow_policy(flaky)()
        assert flaky.calls == 1

        with retries(attempts=3), capture_logs() as logs, pytest.raises(ConnectionError):
            slow_policy(flaky)()
        assert flaky.calls == 1 + 3
        assert [e["wait"] for e in retry_events(logs)] == [0.0, 0.0]

        # Back to the outer block's cap.
        with pytest.raises(ConnectionError):
            slow_policy(flaky)()
        assert flaky.calls == 1 + 3 + 1
    assert time.monotonic() - started < 10.0


def test_testing_switch_covers_async_and_blocks() -> None:
    flaky = always_failing()
    policy = RetryPolicy(on=ConnectionError, wait_initial=30.0, wait_max=30.0)

    async def main() -> None:
        async for attempt in policy.context():
            with attempt:
                await _async(flaky)()

    with retries(attempts=2), pytest.raises(ConnectionError):
        asyncio.run(main())
    assert flaky.calls == 2


def test_testing_switch_is_off_after_the_block() -> None:
    with retries():
        pass
    flaky = Flaky(ConnectionError("a"))
    assert retry(on=ConnectionError, **FAST)(flaky)() == "ok"
    assert flaky.calls == 2


def test_testing_switch_rejects_zero_attempts() -> None:
    with pytest.raises(ValueError, match="at least 1"), retries(attempts=0):
        pass


def test_pytest_fixture_turns_retries_off(backend_kit_retries: int) -> None:
    assert backend_kit_retries == 1
    flaky = always_failing()
    with pytest.raises(ConnectionError):
        retry(on=ConnectionError, wait_initial=30.0, wait_max=30.0)(flaky)()
    assert flaky.calls == 1


@pytest.mark.backend_kit_retries(attempts=3)
def test_pytest_fixture_takes_attempts_from_a_marker(backend_kit_retries: int) -> None:
    assert backend_kit_retries == 3
    flaky = always_failing()
    with pytest.raises(ConnectionError):
        retry(on=ConnectionError, wait_initial=30.0, wait_max=30.0)(flaky)()
    assert flaky.calls == 3


def test_importing_the_testing_module_does_not_import_pytest() -> None:
    code = (
        "import sys, backend_kit, backend_kit.testing; "
        "assert 'pytest' not in sys.modules, 'pytest imported'; "
        "assert 'tenacity' not in sys.modules, 'tenacity imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"attempts": 0}, ValueError, "attempts=0 must be at least 1"),
        ({"attempts": True}, TypeError, "attempts must be an int"),
        ({"attempts": 2.5}, TypeError, "attempts must be an int"),
        ({"timeout": -1}, ValueError, "timeout=-1 must be a finite number"),
        ({"timeout": float("nan")}, ValueError, "timeout=nan"),
        ({"timeout": "45"}, TypeError, "timeout must be a number of seconds"),
        ({"wait_jitter": -0.5}, ValueError, "wait_jitter"),
        ({"wait_initial": 2.0, "wait_max": 1.0}, ValueError, "wait_max .* is smaller"),
    ],
)
def test_invalid_arguments_are_clear_errors(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        retry(on=ConnectionError, **kwargs)


@pytest.mark.parametrize(
    ("on", "error", "match"),
    [
        ("ConnectionError", TypeError, "is not usable; pass an exception type"),
        (int, TypeError, "on=int is not an exception type"),
        ((), ValueError, "retries nothing"),
        ((ConnectionError, "x"), TypeError, "contains 'x'"),
        (None, TypeError, "on=None"),
        (asyncio.sleep, TypeError, "is a coroutine function"),
    ],
)
def test_invalid_on_is_a_clear_error(on: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        retry(on=on)
    with pytest.raises(error, match=match):
        retry_context(on=on)


def test_on_is_required() -> None:
    with pytest.raises(TypeError, match="on"):
        retry()  # type: ignore[call-arg]


def test_generator_functions_are_refused() -> None:
    def numbers() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator function"):
        retry(on=ConnectionError)(numbers)


def test_public_names_are_exported() -> None:
    for name in ("retry", "retry_context", "RetryPolicy", "Attempt", "RetryingBlock"):
        assert name in backend_kit.__all__
        assert hasattr(backend_kit, name)


def test_retry_typing() -> None:
    """tests/typing/retry_api.py type-checks under mypy --strict: signatures survive."""
    api = Path(__file__).parent / "typing" / "retry_api.py"
    root = Path(__file__).parent.parent
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--warn-unused-ignores",
            "--config-file",
            str(root / "pyproject.toml"),
            "--cache-dir",
            str(root / ".mypy_cache"),
            str(api),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_policy_cannot_be_changed() -> None:
    policy = RetryPolicy(on=ConnectionError)
    with pytest.raises(AttributeError, match="cannot be changed"):
        policy.attempts = 3  # type: ignore[misc]
