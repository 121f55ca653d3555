"""A small Django project for the adapter's tests: settings read through backend_kit."""

from __future__ import annotations

import os

from backend_kit.django import cache_from_url, database_from_url

SECRET_KEY = "django-tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "backend_kit.django",
]

MIDDLEWARE = [
    "backend_kit.django.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "tests.django_project.urls"

# The real servers on loopback, as every test of the project uses them.
DATABASES = {
    "default": database_from_url("sqlite://:memory:"),
    "pg": database_from_url(
        os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    ),
}
CACHES = {
    "default": cache_from_url("memory://"),
    "redis": cache_from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")),
}

BACKEND_KIT_SETTINGS = "tests.django_project.service:ServiceSettings"
LOGGING_CONFIG = None  # backend_kit configures logging
