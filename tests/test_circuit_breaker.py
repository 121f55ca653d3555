"""Circuit breakers: states, thresholds, sync and async use, retries and health, and
state shared in a real Redis by two processes."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import backend_kit
from backend_kit import CircuitOpenError, circuit_breaker, configure_logging, load_settings
from backend_kit.health import HealthRegistry, HealthRunner


def _logs() -> io.StringIO:
    stream = io.StringIO()
    configure_logging(load_settings(service_name="svc"), format="json", stream=stream)
    return stream


def _transitions(stream: io.StringIO) -> list[tuple[str, str]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all(line["event"] == "circuit_state_changed" for line in lines), lines
    return [(line["previous"], line["state"]) for line in lines]


def _name() -> str:
    return f"test-{uuid.uuid4().hex}"


def test_opens_after_consecutive_failures_fails_fast_and_recovers() -> None:
    stream = _logs()
    breaker = circuit_breaker(_name(), failures=3, recovery_timeout=0.3)
    calls: list[bool] = []

    @breaker
    def call(fail: bool) -> str:
        calls.append(fail)
        if fail:
            raise ConnectionError("down")
        return "ok"

    for _ in range(2):
        with pytest.raises(ConnectionError):
            call(True)
    assert call(False) == "ok"  # a success resets the consecutive count
    for _ in range(3):
        with pytest.raises(ConnectionError):
            call(True)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpenError) as raised:
        call(False)
    assert raised.value.retry_after > 0
    assert len(calls) == 6  # the open circuit did not call
    time.sleep(0.4)
    assert call(False) == "ok"
    assert breaker.state == "closed"
    assert _transitions(stream) == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_half_open_allows_limited_probes_and_a_failed_probe_reopens() -> None:
    breaker = circuit_breaker(_name(), failures=1, recovery_timeout=0.2, half_open_calls=1)
    with pytest.raises(ConnectionError), breaker:
        raise ConnectionError
    time.sleep(0.3)
    breaker.allow()  # the one probe
    with pytest.raises(CircuitOpenError):
        breaker.allow()  # a second concurrent probe is refused
    breaker.record(success=False)
    assert breaker.state == "open"


def test_opens_on_a_failure_ratio_over_the_window() -> None:
    breaker = circuit_breaker(_name(), failures=100, failure_ratio=0.5, window=30, minimum_calls=10)
    outcomes = [True, False] * 4 + [True]  # 9 calls: under the minimum
    for success in outcomes:
        breaker.allow()
        breaker.record(success)
    assert breaker.state == "closed"
    breaker.allow()
    breaker.record(False)  # 10 calls, 5 failed: 50 %
    assert breaker.state == "open"


def test_only_the_named_exceptions_count() -> None:
    breaker = circuit_breaker(_name(), failures=1, failure_on=ConnectionError)
    with pytest.raises(KeyError), breaker:
        raise KeyError("not a dependency failure")
    assert breaker.state == "closed"


def test_async_decorator_and_context_manager() -> None:
    breaker = circuit_breaker(_name(), failures=2, recovery_timeout=60)
    awaited: list[int] = []

    @breaker
    async def fetch() -> None:
        awaited.append(1)
        raise TimeoutError

    async def main() -> None:
        for _ in range(2):
            with pytest.raises(TimeoutError):
                await fetch()
        with pytest.raises(CircuitOpenError):
            await fetch()
        with pytest.raises(CircuitOpenError):
            async with breaker:
                awaited.append(2)

    asyncio.run(main())
    assert awaited == [1, 1]


def test_retry_never_retries_into_an_open_circuit() -> None:
    breaker = circuit_breaker(_name(), failures=2, recovery_timeout=60)
    attempts: list[int] = []

    @backend_kit.retry(on=Exception, attempts=10, wait_initial=0, wait_jitter=0)
    @breaker
    def call() -> None:
        attempts.append(1)
        raise ConnectionError

    with pytest.raises(CircuitOpenError):
        call()
    assert len(attempts) == 2  # two real calls, then one fast failure and no retry


def test_an_open_circuit_is_a_warn_in_the_health_report() -> None:
    runner = HealthRunner(HealthRegistry(), settings=load_settings(service_name="svc"))
    assert runner.ready().status == "pass"
    name = _name()
    breaker = circuit_breaker(name, failures=1, recovery_timeout=60)
    with pytest.raises(ConnectionError), breaker:
        raise ConnectionError
    report = runner.ready()
    assert report.status == "warn"
    assert report.http_status == 200
    assert [result.check.key for result in report.checks] == [f"{name}:circuit"]
    breaker.reset()
    assert runner.ready().status == "pass"


@pytest.mark.parametrize(
    "arguments",
    [
        {"failures": 0},
        {"failure_ratio": 1.5},
        {"window": 0},
        {"recovery_timeout": -1},
    ],
)
def test_bad_arguments_are_named(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(arguments))):
        circuit_breaker("x", **arguments)  # type: ignore[arg-type]


_OTHER_PROCESS = """
import io, json, sys, time
import backend_kit
from backend_kit import CircuitOpenError

stream = io.StringIO()
backend_kit.configure_logging(backend_kit.load_settings(), format="json", stream=stream)
name, url, mode = sys.argv[1], sys.argv[2], sys.argv[3]
breaker = backend_kit.circuit_breaker(
    name, failures=3, recovery_timeout=1.0, redis_url=url, sync_interval=0.05
)
calls = 0
outcomes = []
for _ in range(5):
    try:
        with breaker:
            calls += 1
            if mode == "fail":
                raise ConnectionError("dependency down")
        outcomes.append("ok")
    except ConnectionError:
        outcomes.append("failed")
    except CircuitOpenError:
        outcomes.append("open")
print(json.dumps({"calls": calls, "outcomes": outcomes, "state": breaker.state,
                  "logs": [json.loads(line) for line in stream.getvalue().splitlines()]}))
"""


def _other_process(name: str, url: str, mode: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_OTHER_PROCESS), name, url, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, object] = json.loads(result.stdout)
    return report


def test_redis_shared_state_opens_and_closes_for_every_process(redis_url: str) -> None:
    import redis

    stream = _logs()
    name = _name()
    breaker = circuit_breaker(
        name, failures=3, recovery_timeout=1.0, redis_url=redis_url, sync_interval=0.05
    )
    client = redis.Redis.from_url(redis_url)
    try:
        # The other process's failures open the circuit ...
        other = _other_process(name, redis_url, "fail")
        assert other["outcomes"] == ["failed"] * 3 + ["open"] * 2
        assert other["calls"] == 3
        assert [(line["previous"], line["state"]) for line in other["logs"]] == [  # type: ignore[attr-defined]
            ("closed", "open")
        ]
        # ... for this one too: it fails fast without calling.
        time.sleep(0.1)
        called: list[int] = []
        with pytest.raises(CircuitOpenError), breaker:
            called.append(1)
        assert called == []
        assert breaker.state == "open"
        # After the recovery timeout, this process's probe closes it for both.
        time.sleep(1.1)
        with breaker:
            called.append(1)
        assert breaker.state == "closed"
        again = _other_process(name, redis_url, "ok")
        assert again["outcomes"] == ["ok"] * 5
        assert again["logs"] == []
        assert _transitions(stream) == [("open", "half_open"), ("half_open", "closed")]
        keys = sorted(key.decode() for key in client.keys(f"backend_kit:circuit:{{{name}}}*"))
        assert keys == [f"backend_kit:circuit:{{{name}}}:state"]
    finally:
        breaker.reset()
        client.close()


def test_redis_unreachable_lets_calls_through(tmp_path: object) -> None:
    from .servers import free_port

    stream = _logs()
    breaker = circuit_breaker(
        _name(), failures=1, redis_url=f"redis://127.0.0.1:{free_port()}/0", sync_interval=0.05
    )
    for _ in range(3):
        with pytest.raises(ConnectionError), breaker:
            raise ConnectionError
        time.sleep(0.06)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["circuit_state_unavailable"]
