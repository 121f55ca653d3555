"""Helpers of the cache outage test: a downstream rates service that counts its calls,
and a bounded load of price requests against an example served by gunicorn."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

__all__ = ["CountingRatesService", "PriceLoad", "Reply", "counting_rates_service"]

RATES = {"USD": 1.0, "EUR": 0.5, "GBP": 0.25}


class CountingRatesService:
    """The downstream: answers ``GET /rates`` and records when each call came."""

    def __init__(self) -> None:
        self.url = ""
        self._lock = threading.Lock()
        self._calls: list[float] = []

    def record(self) -> None:
        with self._lock:
            self._calls.append(time.monotonic())

    def calls_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for moment in self._calls if start <= moment < end)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self._calls)


@contextmanager
def counting_rates_service() -> Iterator[CountingRatesService]:
    service = CountingRatesService()
    body = orjson.dumps({"base": "USD", "rates": RATES})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            service.record()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    service.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="counting-rates", daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass(frozen=True)
class Reply:
    """One price request: when it was sent, its status (0: no HTTP answer), and the
    time the rates it used were fetched (None without a 200)."""

    sent: float
    status: int
    fetched_at: str | None
    error: str | None = None


class PriceLoad:
    """*clients* threads asking for one product's price in a loop until `stop`, each
    request with a timeout; at most *max_requests* in all."""

    def __init__(self, port: int, path: str, *, clients: int = 8, max_requests: int = 20_000):
        self._port = port
        self._path = path
        self._clients = clients
        self._max_requests = max_requests
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.replies: list[Reply] = []

    def _one(self) -> Reply:
        sent = time.monotonic()
        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=10)
        try:
            connection.request("GET", self._path)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            return Reply(sent, 0, None, f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()
        if response.status != 200:
            return Reply(sent, response.status, None, raw[:200].decode(errors="replace"))
        return Reply(sent, 200, orjson.loads(raw)["rates_fetched_at"])

    def _client(self) -> None:
        while not self._stopping.is_set():
            reply = self._one()
            with self._lock:
                self.replies.append(reply)
                if len(self.replies) >= self._max_requests:
                    return
            time.sleep(0.002)  # a steady load, not a flood of a 2-core machine

    def start(self) -> None:
        for number in range(self._clients):
            thread = threading.Thread(target=self._client, name=f"price-load-{number}")
            thread.start()
            self._threads.append(thread)

    def stop(self) -> list[Reply]:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=15)
        with self._lock:
            return list(self.replies)

    def replies_since(self, start: float) -> list[Reply]:
        with self._lock:
            return [reply for reply in self.replies if reply.sent >= start]
