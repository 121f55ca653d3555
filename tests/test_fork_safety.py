"""Fork safety without a server: a real os.fork() while other threads hold the library's
locks or run its in-flight work; the child must not inherit the wait."""

from __future__ import annotations

import io
import os
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator

import orjson
import pytest

import backend_kit
from backend_kit import MemoryCache, configure_logging, get_logger, load_settings
from backend_kit._cache._flight import SingleFlight
from backend_kit._sentry import reset_sentry
from backend_kit.health import HealthCheck, HealthRegistry, HealthRunner

from .sentry_receiver import SentryReceiver, sentry_receiver

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # fork with threads, on purpose
]

# Generous: the child's work takes milliseconds; a deadlock never ends.
CHILD_BOUND = 20.0


def _read_until(fd: int, done: Callable[[bytes], bool], timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not done(data):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _in_child(work: Callable[[], bytes]) -> tuple[bytes, float]:
    """Run *work* in a forked child; its result and how long the child took to give it.
    A child still running after the bound is killed (and the test fails on its output)."""
    read_end, write_end = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, work() + b"\n")
            code = 0
        except BaseException:
            traceback.print_exc()  # the child's only way to say what went wrong
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        output = _read_until(read_end, lambda data: data.endswith(b"\n"), CHILD_BOUND)
        took = time.monotonic() - started
    finally:
        os.close(read_end)
        deadline = time.monotonic() + 10
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
    return output, took


class _StallingStream:
    """Its first write blocks (the parent's thread holds the sink lock meanwhile);
    later writes go straight to a real pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.first = True
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        if self.first:
            self.first = False
            self.entered.set()
            self.release.wait(60)
        return os.write(self.fd, text.encode())

    def flush(self) -> None:
        return None


def test_a_child_forked_while_another_thread_writes_a_line_can_log() -> None:
    log_read, log_write = os.pipe()
    stream = _StallingStream(log_write)
    configure_logging(load_settings(), format="json", stream=stream)  # type: ignore[arg-type]
    writer = threading.Thread(target=lambda: get_logger("parent").info("stuck_mid_write"))
    writer.start()
    try:
        assert stream.entered.wait(10)  # the writer now holds the sink lock

        def child() -> bytes:
            get_logger("child").info("child_logged")
            return b"done"

        output, took = _in_child(child)
        assert output == b"done\n"
        assert took < CHILD_BOUND
        logged = _read_until(log_read, lambda data: b"child_logged" in data, 5)
        (line,) = logged.splitlines()
        assert orjson.loads(line)["event"] == "child_logged"
    finally:
        stream.release.set()
        writer.join(timeout=10)
        os.close(log_read)
        os.close(log_write)


def test_a_health_check_running_at_fork_time_completes_in_the_child() -> None:
    parent = os.getpid()
    gate = threading.Event()

    def slow_in_parent() -> str:
        if os.getpid() == parent:
            gate.wait(60)
        return "ok"

    runner = HealthRunner(
        HealthRegistry([HealthCheck("slow", run=slow_in_parent, timeout=30)]), cache_seconds=0
    )
    probe = threading.Thread(target=runner.run_checks)
    probe.start()
    try:
        deadline = time.monotonic() + 10
        while not any(slot.running for slot in list(runner._slots.values())):
            assert time.monotonic() < deadline, "the parent's check never started"
            time.sleep(0.01)

        def child() -> bytes:
            return runner.ready().to_json(detailed=True)

        output, took = _in_child(child)
        report = orjson.loads(output)
        assert report["status"] == "pass"
        # Well below the check's 30 s timeout: the child ran its own check at once.
        assert took < CHILD_BOUND / 2
    finally:
        gate.set()
        probe.join(timeout=10)


def test_a_cache_load_in_flight_at_fork_time_does_not_block_the_child() -> None:
    flight = SingleFlight()
    loading = threading.Event()
    gate = threading.Event()

    def slow_loader() -> str:
        loading.set()
        gate.wait(60)
        return "parent"

    loader_thread = threading.Thread(target=flight.run, args=("key", slow_loader))
    loader_thread.start()
    try:
        assert loading.wait(10)
        output, took = _in_child(lambda: flight.run("key", lambda: "child").encode())
        assert output == b"child\n"
        assert took < CHILD_BOUND
    finally:
        gate.set()
        loader_thread.join(timeout=10)


def test_a_memory_cache_locked_at_fork_time_answers_hits_in_the_child() -> None:
    cache = MemoryCache()

    @backend_kit.cached(ttl=60, cache=cache)
    def double(n: int) -> int:
        return 2 * n

    assert double(21) == 42
    # As if another thread were mid-read when the process forked.
    with cache._lock:
        output, took = _in_child(lambda: str((double(21), double(5))).encode())
    assert output == b"(42, 10)\n"
    assert took < CHILD_BOUND


@pytest.fixture
def receiver() -> Iterator[SentryReceiver]:
    with sentry_receiver() as running:
        yield running
    reset_sentry(timeout=0)


def test_a_forked_child_reports_to_sentry_through_a_transport_of_its_own(
    receiver: SentryReceiver,
) -> None:
    import sentry_sdk

    settings = load_settings(sentry_dsn=receiver.dsn, environment="test")
    backend_kit.configure(settings)
    configure_logging(settings, format="json", stream=io.StringIO())
    parent_transport = sentry_sdk.get_client().transport
    get_logger("parent").error("from_parent")
    sentry_sdk.flush(5)
    receiver.wait_for(lambda r: len(r.events) >= 1)

    def child() -> bytes:
        fresh = sentry_sdk.get_client().transport is not parent_transport
        get_logger("child").error("from_child")
        sentry_sdk.flush(5)
        return b"fresh" if fresh else b"inherited"

    output, _ = _in_child(child)
    assert output == b"fresh\n"
    receiver.wait_for(lambda r: len(r.events) >= 2)
    time.sleep(0.5)  # a duplicate, if any, would arrive now
    messages = [event.get("logentry", {}).get("message") for event in receiver.events]
    assert sorted(messages) == ["from_child", "from_parent"]


def test_a_forked_child_never_repeats_the_ids_its_parent_hands_out() -> None:
    # New requests draw their ids from a pool made ahead: the child must not share it.
    with backend_kit.request_context() as first:
        assert backend_kit.current_trace() is not None

    def child() -> bytes:
        ids = []
        for _ in range(3):
            with backend_kit.request_context() as request_id:
                trace = backend_kit.current_trace()
                assert trace is not None
                ids += [request_id, trace.trace_id, trace.span_id]
        return " ".join(ids).encode()

    output, _ = _in_child(child)
    in_child = set(output.decode().split())
    in_parent = {first}
    for _ in range(3):
        with backend_kit.request_context() as request_id:
            trace = backend_kit.current_trace()
            assert trace is not None
            in_parent |= {request_id, trace.trace_id, trace.span_id}
    assert len(in_child) == 9
    assert in_child.isdisjoint(in_parent)
