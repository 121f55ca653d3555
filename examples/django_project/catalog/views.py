"""The catalog's JSON API: products in the database, prices with cached exchange rates."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import orjson
from django.db import IntegrityError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods
from shop.service import ShopSettings

import backend_kit

from .models import Product
from .rates import Rates, RatesUnavailableError, exchange_rates_source
from .tasks import index_product

log = backend_kit.get_logger("catalog")


@functools.cache
def exchange_rates() -> Callable[[str], Rates]:
    """The cached, retried rates source, built from the settings on first use."""
    settings = backend_kit.get_settings(ShopSettings)
    return exchange_rates_source(
        str(settings.rates_url) if settings.rates_url else None,
        timeout=settings.rates_timeout,
        ttl=settings.rates_cache_seconds,
    )


@require_GET
def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "service": backend_kit.get_settings().service_name,
            "endpoints": [
                "GET /products",
                "POST /products",
                "GET /products/<sku>",
                "GET /products/<sku>/price?currency=EUR",
                "GET /livez",
                "GET /readyz",
            ],
        }
    )


@csrf_exempt  # a JSON API for other services, not a browser form
@require_http_methods(["GET", "POST"])
def products(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"products": [p.as_json() for p in Product.objects.all()]})
    try:
        body = _read_json(request.body)
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    product = _parse_product(body)
    if isinstance(product, str):
        return JsonResponse({"error": product}, status=400)
    try:
        product.save(force_insert=True)  # never overwrite an existing SKU
    except IntegrityError:
        problem = f"a product with sku {product.sku!r} exists already"
        return JsonResponse({"error": problem}, status=409)
    log.info("product_created", sku=product.sku)
    # Indexed in the background; the worker's lines carry this request's id.
    index_product.delay(product.sku)
    return JsonResponse(product.as_json(), status=201)


@require_GET
def product(request: HttpRequest, sku: str) -> JsonResponse:
    found = Product.objects.filter(sku=sku).first()
    if found is None:
        return JsonResponse({"error": f"no product with sku {sku!r}"}, status=404)
    return JsonResponse(found.as_json())


@require_GET
def price(request: HttpRequest, sku: str) -> JsonResponse:
    currency = request.GET.get("currency", "USD").upper()
    found = Product.objects.filter(sku=sku).first()
    if found is None:
        return JsonResponse({"error": f"no product with sku {sku!r}"}, status=404)
    try:
        rates = exchange_rates()("USD")
    except RatesUnavailableError:
        log.warning("price_unavailable", sku=sku, currency=currency)
        return JsonResponse(
            {"error": "exchange rates are unavailable, try again later"}, status=502
        )
    rate = rates["rates"].get(currency)
    if rate is None:
        return JsonResponse(
            {"error": f"unknown currency {currency!r}", "known": sorted(rates["rates"])}, status=400
        )
    return JsonResponse(
        {
            "sku": sku,
            "currency": currency,
            "price": round(found.price_cents * rate / 100, 2),
            "rate": rate,
            "rates_fetched_at": rates["fetched_at"],  # unchanged while served from the cache
            "request_id": request.request_id,
        }
    )


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
