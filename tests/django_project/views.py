"""Views exercised by the Django adapter's tests."""

from __future__ import annotations

import asyncio

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from backend_kit import current_request_id, get_logger

log = get_logger("project.views")

SECRET_TOKEN = "tok-django-4f2b8e6a"


def hello(request: HttpRequest, name: str) -> JsonResponse:
    log.info("greeting", name=name)
    return JsonResponse({"hello": name})


def whoami(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"request_id": current_request_id(), "attribute": getattr(request, "request_id", None)}
    )


async def whoami_async(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(0.001)  # let other requests interleave on the loop
    return JsonResponse(
        {"request_id": current_request_id(), "attribute": getattr(request, "request_id", None)}
    )


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(f"upstream refused Authorization: Bearer {SECRET_TOKEN}")


def form(request: HttpRequest) -> HttpResponse:
    return HttpResponse("posted")


def unavailable(request: HttpRequest) -> HttpResponse:
    return HttpResponse("down for maintenance", status=503)


@csrf_exempt
def signup(request: HttpRequest) -> HttpResponse:
    request.body  # noqa: B018 - read, as a view would, before it fails
    raise ValueError("signup failed")


def publish_task(request: HttpRequest) -> JsonResponse:
    """Publish ``tests.echo`` with the Celery app the test installed, to its queue."""
    from tests import celery_tasks

    assert celery_tasks.publisher is not None, "the test sets celery_tasks.publisher"
    result = celery_tasks.publisher.send_task(
        "tests.echo",
        args=(request.GET.get("value", ""),),
        queue=request.GET["queue"],
    )
    return JsonResponse({"task_id": result.id, "request_id": current_request_id()})
