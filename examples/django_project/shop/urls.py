from __future__ import annotations

from catalog import views
from django.urls import path

urlpatterns = [
    path("", views.index),
    path("products", views.products),
    path("products/<str:sku>", views.product),
    path("products/<str:sku>/price", views.price),
]
