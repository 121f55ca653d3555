"""The outbound HTTP, circuit breaker and trace APIs as a user types them; checked by
mypy --strict, never run."""

from __future__ import annotations

import httpx
import requests

import backend_kit
from backend_kit import http


def outbound() -> None:
    client: httpx.Client = http.client(base_url="http://rates.internal", timeout=2.0)
    async_client: httpx.AsyncClient = http.async_client(retry_methods={"GET", "POST"})
    session: requests.Session = http.session(breaker=False, attempts=1)
    del client, async_client, session


breaker: backend_kit.CircuitBreaker = backend_kit.circuit_breaker(
    "payments", failures=3, failure_ratio=0.5, recovery_timeout=10.0, failure_on=ConnectionError
)


@breaker
def charge(amount: int) -> str:
    return str(amount)


@breaker
async def refund(amount: int) -> str:
    return str(amount)


def use_breaker() -> None:
    result: str = charge(3)
    with breaker:
        pass
    try:
        charge(1)
    except backend_kit.CircuitOpenError as error:
        wait: float = error.retry_after
        del wait
    state: str = breaker.state
    del result, state


def trace() -> None:
    with backend_kit.request_context("r", traceparent="00-...", tracestate="a=b"):
        current = backend_kit.current_trace()
        if current is not None:
            trace_id: str = current.trace_id
            del trace_id
