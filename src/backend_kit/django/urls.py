"""``path("", include("backend_kit.django.urls"))`` serves the health endpoints."""

from __future__ import annotations

from django.urls import path

from backend_kit.health import health_paths

from ._state import state
from .views import healthz, livez, readyz, startupz

app_name = "backend_kit"

_paths = health_paths(state().settings)

urlpatterns = [
    path(_paths.live.lstrip("/"), livez, name="livez"),
    path(_paths.ready.lstrip("/"), readyz, name="readyz"),
    path(_paths.report.lstrip("/"), healthz, name="healthz"),
    path(_paths.startup.lstrip("/"), startupz, name="startupz"),
]
