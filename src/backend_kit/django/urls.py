"""Kept so that ``path("", include("backend_kit.django.urls"))`` in an existing project
still works: it adds no routes. The health endpoints are answered by
`backend_kit.django.middleware.RequestContextMiddleware`, before any other middleware,
so they are routed in one place."""

from __future__ import annotations

from typing import Any

app_name = "backend_kit"

urlpatterns: list[Any] = []
