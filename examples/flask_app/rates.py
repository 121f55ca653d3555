"""Exchange rates from an outbound HTTP service: retried when it fails, cut off by a
circuit breaker when it keeps failing, cached when it works."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx
import orjson

from backend_kit import CircuitOpenError, cached, circuit_breaker, get_logger, http, retry

log = get_logger("catalog.rates")

Rates = dict[str, Any]  # {"base": "USD", "rates": {"EUR": 0.92, ...}, "fetched_at": "..."}

OFFLINE_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.3}


class RatesUnavailableError(Exception):
    """The exchange-rate service did not answer usefully, even after retries."""


# Five failed fetches in a row stop the calls for 30 seconds: pages that need rates
# fail fast instead of each waiting for a service that is down.
rates_breaker = circuit_breaker("exchange-rates", failures=5, recovery_timeout=30.0)


def download_rates(url: str, *, timeout: float) -> dict[str, float]:
    """GET *url* (JSON ``{"rates": {"EUR": 0.92}}``) within *timeout* seconds per attempt.

    backend_kit.http retries timeouts, refused connections, 429 and 502-504 (honouring
    ``Retry-After``), propagates the request id and trace, and logs the call once.
    """
    with http.client(
        timeout=timeout, breaker=rates_breaker, headers={"Accept": "application/json"}
    ) as client:
        response = client.get(url)
    if response.status_code != 200:
        raise RatesUnavailableError(f"{url} answered HTTP {response.status_code}")
    body = orjson.loads(response.content)
    rates = body.get("rates") if isinstance(body, dict) else None
    if not isinstance(rates, dict) or not all(
        isinstance(value, (int, float)) for value in rates.values()
    ):
        raise RatesUnavailableError(f"{url} answered without a rates object")
    return {str(code): float(value) for code, value in rates.items()}


_offline_calls = itertools.count(1)


@retry(on=ConnectionError, attempts=3, timeout=5.0, wait_initial=0.05, wait_jitter=0.05)
def offline_rates() -> dict[str, float]:
    """Built-in rates for running without a network; every other call fails, to show retries."""
    if next(_offline_calls) % 2 == 1:
        raise ConnectionError("offline rates: simulated outage, try again")
    return dict(OFFLINE_RATES)


def exchange_rates_source(
    rates_url: str | None, *, timeout: float, ttl: float
) -> Callable[[str], Rates]:
    """A function ``base -> Rates`` that caches what it fetches for *ttl* seconds.

    Raises `RatesUnavailableError` when the service fails more times than retries allow.
    """

    @cached(ttl=ttl, namespace="rates")
    def exchange_rates(base: str) -> Rates:
        source = rates_url or "offline"
        try:
            if rates_url is None:
                rates = offline_rates()
            else:
                url = f"{rates_url.rstrip('/')}/rates?base={base}"
                rates = download_rates(url, timeout=timeout)
        except (httpx.HTTPError, CircuitOpenError, ConnectionError) as exc:
            raise RatesUnavailableError(f"exchange rates unavailable from {source}: {exc}") from exc
        fetched_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        # Logged only when the rates are really fetched: a cache hit never runs this body.
        log.info("exchange_rates_fetched", base=base, source=source, currencies=len(rates))
        return {"base": base, "rates": rates, "fetched_at": fetched_at}

    return exchange_rates
