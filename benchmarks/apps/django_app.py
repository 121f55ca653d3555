"""A trivial Django project in one module, bare or with backend_kit.

    gunicorn "apps.django_app:create_application(kit=False)"
    gunicorn "apps.django_app:create_application(kit=True)"

Bare: no middleware at all. With backend_kit: its app installed and its
``RequestContextMiddleware`` as the only middleware (request logging at info, JSON).
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

BODY = {"status": "ok", "items": [1, 2, 3]}
KIT_MIDDLEWARE = "backend_kit.django.middleware.RequestContextMiddleware"


def hello(request: HttpRequest) -> JsonResponse:
    return JsonResponse(BODY)


urlpatterns = [path("hello", hello)]


def django_settings(*, kit: bool) -> dict[str, Any]:
    """Settings for ``django.conf.settings.configure()``."""
    return {
        "SECRET_KEY": "benchmark-only-not-a-secret",
        "DEBUG": False,
        "ALLOWED_HOSTS": ["*"],
        "ROOT_URLCONF": __name__,
        "INSTALLED_APPS": ["backend_kit.django"] if kit else [],
        "MIDDLEWARE": [KIT_MIDDLEWARE] if kit else [],
        "DATABASES": {},
        "USE_TZ": True,
        "LOGGING_CONFIG": None if kit else "logging.config.dictConfig",
    }


def setup_django(*, kit: bool) -> None:
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
    settings.configure(**django_settings(kit=kit))
    django.setup()


def create_application(*, kit: bool) -> Any:
    """The WSGI application of the bare or the backend_kit project."""
    from django.core.wsgi import get_wsgi_application

    setup_django(kit=kit)
    return get_wsgi_application()
