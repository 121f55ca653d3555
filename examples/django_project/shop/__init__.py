"""The shop project. Its Celery app is loaded with Django, so views can publish tasks."""

from __future__ import annotations

from .celery import app as celery_app

__all__ = ["celery_app"]
