"""Django settings, derived from one typed read of the environment (`ShopSettings`)."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

import backend_kit
from backend_kit.django import cache_from_url, database_from_url

from .service import ShopSettings

SERVICE = backend_kit.load_settings(ShopSettings)

if SERVICE.secret_key is not None:
    SECRET_KEY = SERVICE.secret_key.get_secret_value()
elif SERVICE.environment == "production":
    raise ImproperlyConfigured(
        "set SHOP_SECRET_KEY (or SHOP_ENVIRONMENT=development to try the project out)"
    )
else:
    SECRET_KEY = "development-only-not-a-secret"  # noqa: S105

DEBUG = SERVICE.debug
ALLOWED_HOSTS = SERVICE.allowed_hosts
USE_TZ = True

INSTALLED_APPS = [
    "backend_kit.django",  # loads ShopSettings, configures logging and Sentry
    "catalog",
]

MIDDLEWARE = [
    "backend_kit.django.middleware.RequestContextMiddleware",  # first: request ids, probes
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]

ROOT_URLCONF = "shop.urls"
WSGI_APPLICATION = "shop.wsgi.application"

# The URLs and SHOP_DATABASE_STATEMENT_TIMEOUT (statement, read and lock timeouts) come
# from SERVICE; a hung database then fails a request instead of holding its worker.
DATABASES = {"default": database_from_url(SERVICE)}
CACHES = {"default": cache_from_url(SERVICE)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

BACKEND_KIT_SETTINGS = "shop.service:ShopSettings"
LOGGING_CONFIG = None  # backend_kit configures logging
