"""A trivial Django project in one module, bare or with backend_kit.

    gunicorn "apps.django_app:create_application(kit=False)"
    gunicorn "apps.django_app:create_application(kit=True)"
    gunicorn "apps.django_app:create_application(kit=False, floor=True)"

Bare: no middleware at all. With backend_kit: its app installed and its
``RequestContextMiddleware`` as the only middleware (request logging at info, JSON).
The floor: the bare project with one minimal middleware that writes the same request
line with orjson alone (`apps.orjson_line`).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

BODY = {"status": "ok", "items": [1, 2, 3]}
KIT_MIDDLEWARE = "backend_kit.django.middleware.RequestContextMiddleware"
FLOOR_MIDDLEWARE = "apps.orjson_line.OrjsonLineDjangoMiddleware"


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse(BODY)


urlpatterns = [path("hello", hello)]


def django_settings(*, kit: bool, floor: bool = False) -> dict[str, Any]:
    """Settings for ``django.conf.settings.configure()``."""
    middleware = [KIT_MIDDLEWARE] if kit else [FLOOR_MIDDLEWARE] if floor else []
    return {
        "SECRET_KEY": "benchmark-only-not-a-secret",
        "DEBUG": False,
        "ALLOWED_HOSTS": ["*"],
        "ROOT_URLCONF": __name__,
        "INSTALLED_APPS": ["backend_kit.django"] if kit else [],
        "MIDDLEWARE": middleware,
        "DATABASES": {},
        "USE_TZ": True,
        "LOGGING_CONFIG": None if kit else "logging.config.dictConfig",
    }


def setup_django(*, kit: bool, floor: bool = False) -> None:
    """Configure Django for the bare or the backend_kit project and run ``django.setup()``."""
    import os

    import django
    from django.conf import settings

    if kit:
        # What a service sets in its environment; read by backend_kit's settings.
        os.environ.setdefault("SERVICE_NAME", "bench")
        os.environ.setdefault("ENVIRONMENT", "production")
        os.environ.setdefault("LOG_LEVEL", "INFO")
        os.environ.setdefault("LOG_FORMAT", "json")
    settings.configure(**django_settings(kit=kit, floor=floor))
    django.setup()


def create_application(*, kit: bool, floor: bool = False) -> Any:
    """The WSGI application of the bare or the backend_kit project, or with *floor*
    the bare one with the orjson line middleware."""
    from django.core.wsgi import get_wsgi_application

    setup_django(kit=kit, floor=floor)
    return get_wsgi_application()
