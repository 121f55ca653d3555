from __future__ import annotations

from typing import Any

from django.db import models


class Product(models.Model):
    sku = models.CharField(primary_key=True, max_length=64)
    name = models.CharField(max_length=200)
    price_cents = models.PositiveIntegerField()  # in US cents

    class Meta:
        ordering = ("sku",)

    def __str__(self) -> str:
        return self.sku

    def as_json(self) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "name": self.name,
            "price_cents": self.price_cents,
            "price": self.price_cents / 100,
            "currency": "USD",
        }
