"""Django integration: add ``"backend_kit.django"`` to ``INSTALLED_APPS``.

Only this package imports Django; import it from a Django project, never from a
library module.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('backend_kit.django needs Django: pip install "backend-kit[django]"') from exc

from ._state import health_registry
from .config import cache_from_url, database_from_url

__all__ = ["cache_from_url", "database_from_url", "health_registry"]
