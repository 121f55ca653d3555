"""The catalog's background work, run by the Celery worker (``celery -A shop worker``)."""

from __future__ import annotations

from celery import shared_task

import backend_kit

from .models import Product

log = backend_kit.get_logger("catalog.tasks")


# Celery's own retries: on ConnectionError the task is published again with the same
# task id and request id, up to 5 times with exponential backoff.
@shared_task(
    name="catalog.index_product",
    autoretry_for=(ConnectionError,),
    retry_backoff=True,
    max_retries=5,
)
def index_product(sku: str) -> int:
    """Pretend to index one product for search; gives the product count."""
    log.info("product_indexed", sku=sku, known=Product.objects.filter(sku=sku).exists())
    return Product.objects.count()
