"""The request context: ids, validation of inbound ids, isolation between requests."""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import backend_kit
from backend_kit import (
    bind_context,
    current_context,
    current_request_id,
    current_trace,
    request_context,
)
from backend_kit._context import is_safe_request_id, new_request_id

_GENERATED = re.compile(r"[0-9a-f]{32}")
_SAFE_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-"


def test_public_names_are_exported() -> None:
    for name in ("request_context", "current_request_id", "current_context", "bind_context"):
        assert name in backend_kit.__all__
        assert getattr(backend_kit, name) is not None


def test_no_request_id_outside_a_request() -> None:
    assert current_request_id() is None
    assert dict(current_context()) == {}


def test_fresh_id_when_none_is_given() -> None:
    with request_context() as request_id:
        assert _GENERATED.fullmatch(request_id)
        assert current_request_id() == request_id
    with request_context() as other:
        assert other != request_id


def test_safe_inbound_id_is_kept_and_values_are_bound() -> None:
    with request_context("req-1.a:b_C", user_id=7, route="/orders") as request_id:
        assert request_id == "req-1.a:b_C"
        trace = current_trace()
        assert trace is not None
        assert current_context() == {
            "request_id": "req-1.a:b_C",
            "user_id": 7,
            "route": "/orders",
            "trace_id": trace.trace_id,
            "span_id": trace.span_id,
        }
    assert current_request_id() is None
    assert dict(current_context()) == {}


@pytest.mark.parametrize(
    "inbound",
    [
        "",
        "x" * 129,
        "abc\ndef",
        "abc\r\nX-Injected: 1",
        'quote"d',
        "single'quote",
        "tab\there",
        "nul\x00byte",
        "space inside",
        "slash/path",
        "unicodé",
        "<script>",
    ],
)
def test_unsafe_inbound_id_is_replaced(inbound: str) -> None:
    with request_context(inbound) as request_id:
        assert request_id != inbound
        assert _GENERATED.fullmatch(request_id)


def test_128_characters_is_the_limit() -> None:
    with request_context("a" * 128) as request_id:
        assert request_id == "a" * 128


@given(st.text(alphabet=_SAFE_ALPHABET, min_size=1, max_size=128))
def test_every_safe_id_is_kept(inbound: str) -> None:
    with request_context(inbound) as request_id:
        assert request_id == inbound


@given(st.text(max_size=300))
def test_whatever_comes_in_the_id_in_force_is_safe(inbound: str) -> None:
    with request_context(inbound) as request_id:
        assert is_safe_request_id(request_id)
        assert request_id == inbound or _GENERATED.fullmatch(request_id)


def test_non_string_id_is_replaced() -> None:
    with request_context(12345) as request_id:  # type: ignore[arg-type]
        assert _GENERATED.fullmatch(request_id)


def test_nested_context_inherits_and_restores() -> None:
    with request_context("outer", tenant="acme"):
        outer_trace = current_trace()
        assert outer_trace is not None
        ids = {"trace_id": outer_trace.trace_id, "span_id": outer_trace.span_id}
        with request_context(step="charge") as inner:
            assert inner == "outer"
            assert current_context() == {
                "request_id": "outer",
                "tenant": "acme",
                "step": "charge",
                **ids,
            }
        with request_context("job-2") as job:
            assert job == "job-2"
            assert current_context()["tenant"] == "acme"
        assert current_context() == {"request_id": "outer", "tenant": "acme", **ids}
        assert current_trace() is outer_trace
    assert current_trace() is None


def test_context_is_restored_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError), request_context("failing", user_id=1):
        raise RuntimeError("boom")
    assert current_request_id() is None
    assert dict(current_context()) == {}


def test_bind_context_adds_values_until_the_request_ends() -> None:
    with request_context("r1"):
        bind_context(user_id=42)
        assert current_context()["user_id"] == 42
    with request_context("r2"):
        assert "user_id" not in current_context()


def test_bind_context_refuses_to_change_the_request_id() -> None:
    with request_context("r1"), pytest.raises(ValueError, match="request_context"):
        bind_context(request_id="other")


def test_context_is_read_only() -> None:
    with request_context("r1"):
        with pytest.raises(TypeError):
            current_context()["request_id"] = "changed"  # type: ignore[index]
        assert current_request_id() == "r1"


def test_threads_each_see_their_own_request() -> None:
    seen: dict[int, list[str | None]] = {}
    barrier = threading.Barrier(20)

    def serve(index: int) -> None:
        with request_context(f"thread-{index}"):
            barrier.wait(timeout=10)  # all requests are open at the same time
            seen[index] = [current_request_id()]
        seen[index].append(current_request_id())

    threads = [threading.Thread(target=serve, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert seen == {i: [f"thread-{i}", None] for i in range(20)}


def test_context_follows_copy_context_into_a_worker_thread() -> None:
    result: list[str | None] = []
    with request_context("parent"):
        ctx = contextvars.copy_context()
    thread = threading.Thread(target=lambda: result.append(ctx.run(current_request_id)))
    thread.start()
    thread.join(timeout=10)
    assert result == ["parent"]


def test_asyncio_tasks_each_see_their_own_request() -> None:
    async def serve(index: int) -> tuple[str | None, str | None]:
        with request_context(f"task-{index}"):
            await asyncio.sleep(0)
            inside = current_request_id()
        return inside, current_request_id()

    async def main() -> list[tuple[str | None, str | None]]:
        return list(await asyncio.gather(*(serve(i) for i in range(30))))

    assert asyncio.run(main()) == [(f"task-{i}", None) for i in range(30)]


def test_new_request_id_is_random() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
