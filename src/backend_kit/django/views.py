"""The health endpoints: ``/livez``, ``/readyz``, ``/healthz`` and ``/startupz``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt

from ._state import Probe, state

__all__ = ["health_view_for_path", "healthz", "livez", "metrics", "readyz", "startupz"]


def _probe_view(
    probe: Literal["live", "ready", "report", "startup"],
) -> Callable[[HttpRequest], HttpResponse]:
    @csrf_exempt
    @never_cache
    def view(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
        answer = state().health_runner.respond(probe, request.headers.get("Authorization"))
        return HttpResponse(answer.body, status=answer.status_code, headers=answer.headers)

    view.__name__ = {"live": "livez", "ready": "readyz", "report": "healthz"}.get(probe, "startupz")
    return _public(view)


def _public(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    # Django 5.1's LoginRequiredMiddleware must let probes through.
    try:
        from django.contrib.auth.decorators import login_not_required
    except ImportError:
        return view
    decorated: Callable[[HttpRequest], HttpResponse] = login_not_required(view)
    return decorated


@csrf_exempt
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus metrics (`backend_kit.metrics.respond`), only with METRICS_ENABLED."""
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET"})
    from backend_kit.metrics import respond

    answer = respond(
        request.headers.get("Authorization"), request.headers.get("Accept"), state().settings
    )
    return HttpResponse(answer.body, status=answer.status_code, headers=answer.headers)


livez = _probe_view("live")
readyz = _probe_view("ready")
healthz = _probe_view("report")
startupz = _probe_view("startup")


_VIEWS: dict[Probe, Callable[[Any], HttpResponse]] = {
    "live": livez,
    "ready": readyz,
    "report": healthz,
    "startup": startupz,
    "metrics": _public(metrics),
}


def health_view_for_path(path: str) -> Callable[[Any], HttpResponse] | None:
    """The health view serving *path*, or ``None`` for every other path."""
    probe = state().health_probes.get(path)
    return _VIEWS[probe] if probe is not None else None
