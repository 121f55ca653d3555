"""The shop's Celery app: ``celery -A shop worker`` in the worker container.

The web process imports it too (``shop/__init__.py``) to publish tasks. Both read the
same ``ShopSettings`` (``SHOP_CELERY_BROKER_URL``, ``SHOP_LOG_FORMAT``...), and
`init_celery` makes the worker log and report to Sentry exactly like the web process.
Without ``SHOP_CELERY_BROKER_URL`` tasks run at once, inside the request (handy to try
the project out without a broker).
"""

from __future__ import annotations

import os

from celery import Celery

import backend_kit
from backend_kit.celery import init_celery

from .service import ShopSettings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")

SERVICE = backend_kit.load_settings(ShopSettings)

app = init_celery(Celery("shop"), settings=SERVICE)
app.conf.task_default_queue = SERVICE.celery_queue
app.conf.task_always_eager = SERVICE.celery_broker_url is None
app.autodiscover_tasks()
