"""A tiny Sentry ingest endpoint on 127.0.0.1 that decodes envelopes for assertions.

sentry-sdk's real HTTP transport posts envelopes to ``/api/<project>/envelope/``; this
server accepts them, decompresses (gzip or brotli), splits them into items and keeps
them, so a test can assert on exactly what would have reached Sentry.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EnvelopeItem", "SentryReceiver", "sentry_receiver"]


@dataclass(frozen=True)
class EnvelopeItem:
    type: str
    headers: dict[str, Any]
    payload: Any  # decoded JSON when the item is JSON, else bytes


@dataclass
class SentryReceiver:
    port: int
    items: list[EnvelopeItem] = field(default_factory=list)
    raw_bodies: list[bytes] = field(default_factory=list)
    _condition: threading.Condition = field(default_factory=threading.Condition)

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def of_type(self, item_type: str) -> list[Any]:
        with self._condition:
            return [item.payload for item in self.items if item.type == item_type]

    @property
    def events(self) -> list[dict[str, Any]]:
        return self.of_type("event")

    @property
    def transactions(self) -> list[dict[str, Any]]:
        return self.of_type("transaction")

    def wait_for(
        self, predicate: Callable[[SentryReceiver], bool], *, timeout: float = 10.0
    ) -> None:
        """Block until *predicate(self)* holds; fail the test after *timeout* seconds."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = [item.type for item in self.items]
                    raise AssertionError(f"Sentry receiver timed out; received items: {kinds}")
                self._condition.wait(remaining)

    def add(self, body: bytes) -> None:
        items = parse_envelope(body)
        with self._condition:
            self.raw_bodies.append(body)
            self.items.extend(items)
            self._condition.notify_all()


def parse_envelope(body: bytes) -> list[EnvelopeItem]:
    """Split a Sentry envelope (header line, then item header + payload pairs)."""
    _, _, rest = body.partition(b"\n")
    items: list[EnvelopeItem] = []
    while rest.strip():
        header_line, _, rest = rest.partition(b"\n")
        headers = json.loads(header_line)
        length = headers.get("length")
        if length is None:
            payload_bytes, _, rest = rest.partition(b"\n")
        else:
            payload_bytes, rest = rest[:length], rest[length + 1 :]
        try:
            payload: Any = json.loads(payload_bytes)
        except ValueError:
            payload = payload_bytes
        items.append(EnvelopeItem(type=headers.get("type", ""), headers=headers, payload=payload))
    return items


def _decode(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "br":
        import brotli  # type: ignore[import-not-found]

        return bytes(brotli.decompress(body))
    return body


@contextmanager
def sentry_receiver() -> Iterator[SentryReceiver]:
    """Start a receiver on a free port of 127.0.0.1; stop it when the block exits."""
    server_holder: dict[str, SentryReceiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = _decode(self.rfile.read(length), self.headers.get("Content-Encoding", ""))
            server_holder["receiver"].add(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = SentryReceiver(port=int(server.server_address[1]))
    server_holder["receiver"] = receiver
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="sentry-receiver",
        daemon=True,
    )
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
