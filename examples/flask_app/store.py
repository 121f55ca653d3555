"""Products in SQLite (the standard library's sqlite3; one connection per operation)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0)
)
"""


@dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price_cents: int  # in US cents

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "price": self.price_cents / 100, "currency": "USD"}


class DuplicateProductError(Exception):
    """A product with this SKU exists already."""


def sqlite_path(database_url: str) -> Path:
    """The file a ``sqlite:///relative`` or ``sqlite:////absolute`` URL names.

    Raises `ValueError` for another scheme or an in-memory database, which every
    gunicorn worker would see empty.
    """
    parts = urlsplit(database_url)
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.scheme != "sqlite" or not path or path == ":memory:":
        raise ValueError(
            "CATALOG_DATABASE_URL must name an SQLite file for this example, for example "
            "sqlite:///catalog.sqlite3 (relative) or sqlite:////tmp/catalog.sqlite3"
        )
    return Path(path)


class ProductStore:
    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self.path = path
        # How long an operation waits for a lock another writer holds
        # (CATALOG_DATABASE_STATEMENT_TIMEOUT), so a stuck writer fails requests with
        # "database is locked" instead of holding them.
        self.timeout = timeout

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short connection per operation: safe across gunicorn's threads and workers.
        with closing(sqlite3.connect(self.path, timeout=self.timeout)) as connection, connection:
            yield connection

    def create_schema(self) -> None:
        with self._connect() as connection:
            connection.execute(SCHEMA)

    def add(self, product: Product) -> None:
        try:
            with self._connect() as connection:
                connection.execute(
                    "INSERT INTO products (sku, name, price_cents) VALUES (?, ?, ?)",
                    (product.sku, product.name, product.price_cents),
                )
        except sqlite3.IntegrityError:
            raise DuplicateProductError(product.sku) from None

    def get(self, sku: str) -> Product | None:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT sku, name, price_cents FROM products WHERE sku = ?", (sku,)
            ).fetchone()
        return None if row is None else Product(*row)

    def all(self) -> list[Product]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT sku, name, price_cents FROM products ORDER BY sku"
            ).fetchall()
        return [Product(*row) for row in rows]
