"""The dependency-fault API as a user types it; checked with ``mypy --strict``, never run."""

from __future__ import annotations

from typing import Any

import backend_kit
from backend_kit.health import HealthRegistry, sentry_check, sqlite_check

settings = backend_kit.load_settings(database_statement_timeout=5.0)
timeout: float = settings.database_statement_timeout

drops: backend_kit.SentryDrops = backend_kit.dropped_sentry_events()
total: int = drops.total
recent: bool = drops.recent
by_reason: int = sum(drops.by_reason.values())

registry = HealthRegistry([sentry_check(), sqlite_check("db.sqlite3", timeout=0.5)])


def django_databases() -> dict[str, Any]:
    from backend_kit.django import database_from_url

    return {
        "default": database_from_url(settings),
        "replica": database_from_url("postgres://u@replica/db", settings=settings),
        "reports": database_from_url(settings.database_url, statement_timeout=30.0),
    }
