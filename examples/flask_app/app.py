"""The catalog service: products in SQLite, prices converted with cached exchange rates.

Run it from this folder with ``gunicorn app:app`` (see README.md).
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Flask, g, request
from rates import RatesUnavailableError, exchange_rates_source
from settings import CatalogSettings
from store import DuplicateProductError, Product, ProductStore, sqlite_path

import backend_kit
from backend_kit.flask import init_app

log = backend_kit.get_logger("catalog")

JSON = tuple[dict[str, Any], int]


def create_app(settings: CatalogSettings | None = None) -> Flask:
    """The WSGI app, configured from *settings* (default: loaded from the environment)."""
    settings = settings if settings is not None else backend_kit.load_settings(CatalogSettings)
    app = init_app(Flask("catalog"), settings=settings)  # logging, request ids, /readyz, ...

    assert settings.database_url is not None
    store = ProductStore(
        sqlite_path(settings.database_url.get_secret_value()),
        timeout=settings.database_statement_timeout,
    )
    store.create_schema()
    exchange_rates = exchange_rates_source(
        str(settings.rates_url) if settings.rates_url else None,
        timeout=settings.rates_timeout,
        ttl=settings.rates_cache_seconds,
    )

    @app.get("/")
    def index() -> dict[str, Any]:
        return {
            "service": settings.service_name,
            "endpoints": [
                "GET /products",
                "POST /products",
                "GET /products/<sku>",
                "GET /products/<sku>/price?currency=EUR",
                "GET /livez",
                "GET /readyz",
            ],
        }

    @app.get("/products")
    def list_products() -> dict[str, Any]:
        return {"products": [product.as_json() for product in store.all()]}

    @app.post("/products")
    def create_product() -> JSON:
        try:
            body = _read_json(request.get_data(cache=False))
        except ValueError as exc:
            return {"error": str(exc)}, 400
        product = _parse_product(body)
        if isinstance(product, str):
            return {"error": product}, 400
        try:
            store.add(product)
        except DuplicateProductError:
            return {"error": f"a product with sku {product.sku!r} exists already"}, 409
        log.info("product_created", sku=product.sku)
        return product.as_json(), 201

    @app.get("/products/<sku>")
    def get_product(sku: str) -> JSON:
        product = store.get(sku)
        if product is None:
            return {"error": f"no product with sku {sku!r}"}, 404
        return product.as_json(), 200

    @app.get("/products/<sku>/price")
    def get_price(sku: str) -> JSON:
        currency = request.args.get("currency", "USD").upper()
        product = store.get(sku)
        if product is None:
            return {"error": f"no product with sku {sku!r}"}, 404
        try:
            rates = exchange_rates("USD")
        except RatesUnavailableError:
            log.warning("price_unavailable", sku=sku, currency=currency)
            return {"error": "exchange rates are unavailable, try again later"}, 502
        rate = rates["rates"].get(currency)
        if rate is None:
            return {"error": f"unknown currency {currency!r}", "known": sorted(rates["rates"])}, 400
        return {
            "sku": sku,
            "currency": currency,
            "price": round(product.price_cents * rate / 100, 2),
            "rate": rate,
            "rates_fetched_at": rates["fetched_at"],  # unchanged while served from the cache
            "request_id": g.request_id,
        }, 200

    return app


def _parse_product(body: Any) -> Product | str:
    """The product a request body describes, or what is wrong with it."""
    if not isinstance(body, dict):
        return 'send a JSON object: {"sku": "tea-1", "name": "Green tea", "price": 4.5}'
    sku, name, price = body.get("sku"), body.get("name"), body.get("price")
    if not isinstance(sku, str) or not 1 <= len(sku) <= 64 or "/" in sku:
        return "sku must be a string of 1 to 64 characters without '/'"
    if not isinstance(name, str) or not name.strip():
        return "name must be a non-empty string"
    if isinstance(price, bool) or not isinstance(price, (int, float)) or not 0 <= price <= 1e9:
        return "price must be a number from 0 to 1000000000 (US dollars)"
    return Product(sku=sku, name=name, price_cents=round(price * 100))


def _read_json(body: bytes) -> Any:
    """The JSON value of a request *body*, or a `ValueError` saying what is wrong.

    orjson refuses what the standard library would let through into a 500: NaN and
    Infinity, numbers too large for a float (1e400), and nesting over 1024 levels (the
    standard parser recurses until RecursionError).
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValueError(
            f"the request body is not valid JSON ({exc}); send a JSON object with finite "
            "numbers and at most 1024 levels of nesting"
        ) from None


app = create_app()
