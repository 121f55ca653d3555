"""A Redis outage under real gunicorn: the Flask example keeps answering, the downstream
is called at most once per worker for the whole outage, and Redis hits resume soon after
it is back."""

from __future__ import annotations

import http.client
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from ..servers import RedisServer, gunicorn_server, redis_server
from ._cache_load import CountingRatesService, PriceLoad, Reply, counting_rates_service

pytestmark = pytest.mark.redis

FLASK_APP = Path(__file__).resolve().parent.parent.parent / "examples" / "flask_app"
WORKERS = 2
RATES_TTL = 60  # seconds: longer than the outage, so one load per worker covers it
SKU = "outage-tea"
_FETCHED_AT = re.compile(rb'"fetched_at":"([^"]{1,64})"')


def _env(tmp: Path, redis_url: str, rates_url: str) -> dict[str, str]:
    settings = {
        "SERVICE_NAME": "catalog-outage",
        "ENVIRONMENT": "test",
        "LOG_FORMAT": "json",
        "CACHE_URL": redis_url,
        "CACHE_TIMEOUT": "0.5",
        "DATABASE_URL": f"sqlite:///{tmp / 'catalog.sqlite3'}",
        "RATES_URL": rates_url,
        "RATES_TIMEOUT": "2",
        "RATES_CACHE_SECONDS": str(RATES_TTL),
    }
    (tmp / "secrets").mkdir(exist_ok=True)
    # Only the variables of this service: nothing a developer exported leaks in.
    inherited = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    return {
        **inherited,
        "PYTHONUNBUFFERED": "1",
        "BACKEND_KIT_SECRETS_DIR": str(tmp / "secrets"),
        **{f"CATALOG_{name}": value for name, value in settings.items()},
    }


def _stored_fetched_at(server: RedisServer) -> str | None:
    """The fetched_at of the rates stored in *server*, or None when none are."""
    client = redis.Redis.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
    try:
        for key in client.scan_iter(match="catalog-outage:{rates|?}:*"):
            raw = client.get(key)
            # The stored form has a format marker before the JSON: read the field only.
            found = _FETCHED_AT.search(raw or b"")
            if found is not None:
                return found.group(1).decode()
        return None
    finally:
        client.close()


def _errors(replies: list[Reply]) -> list[Reply]:
    return [reply for reply in replies if reply.status != 200]


@pytest.fixture
def rates() -> Iterator[CountingRatesService]:
    with counting_rates_service() as service:
        yield service


def test_redis_outage_protects_the_downstream_and_hits_resume(
    tmp_path: Path, rates: CountingRatesService
) -> None:
    with (
        redis_server() as cache_server,
        gunicorn_server(
            "app:app",
            cwd=FLASK_APP,
            env=_env(tmp_path, cache_server.url, rates.url),
            log_path=tmp_path / "gunicorn.log",
            workers=WORKERS,
        ) as gunicorn,
    ):
        load = PriceLoad(gunicorn.port, f"/products/{SKU}/price?currency=EUR")
        connection = http.client.HTTPConnection("127.0.0.1", gunicorn.port, timeout=10)
        connection.request(
            "POST",
            "/products",
            body=orjson.dumps({"sku": SKU, "name": "Tea", "price": 4}),
            headers={"Content-Type": "application/json"},
        )
        assert connection.getresponse().status == 201
        connection.close()

        load.start()
        try:
            # Before: Redis serves every worker; one load in all.
            time.sleep(1.5)
            assert rates.calls == 1
            assert _stored_fetched_at(cache_server) is not None

            # During: Redis is killed mid-load.
            outage_started = time.monotonic()
            cache_server.stop()
            time.sleep(3.0)
            outage_ended = time.monotonic()
            cache_server.start()  # the same port, empty

            # After: hits resume from the restarted Redis.
            time.sleep(4.0)
            stored_after = _stored_fetched_at(cache_server)
        finally:
            replies = load.stop()
        log = gunicorn.output()

    during = [reply for reply in replies if outage_started <= reply.sent < outage_ended]
    after = [reply for reply in replies if reply.sent >= outage_ended]
    assert len(during) >= 50, len(during)
    assert len(after) >= 50, len(after)
    # No request failed because of the cache.
    assert _errors(replies) == [], (_errors(replies)[:5], log[-3000:])
    # The downstream during the outage: at most once per key per worker per ttl.
    during_calls = rates.calls_between(outage_started, outage_ended)
    assert 1 <= during_calls <= WORKERS, during_calls
    # Hits resume: from some reply on, every reply carries the rates stored in the
    # restarted Redis (each worker answered from its own memory until then).
    assert rates.calls_between(outage_ended, time.monotonic()) <= WORKERS
    stored = {reply.fetched_at for reply in after[-20:]}
    assert stored == {stored_after}, (stored, stored_after)
    first_of_the_rest = len(after)
    while first_of_the_rest > 0 and after[first_of_the_rest - 1].fetched_at in stored:
        first_of_the_rest -= 1
    resumed_after = after[first_of_the_rest].sent - outage_ended
    assert resumed_after < 3.0, resumed_after  # about 0.5 s expected; generous margin
    assert '"event": "cache_unavailable"' in log or '"event":"cache_unavailable"' in log
    assert "cache_recovered" in log
