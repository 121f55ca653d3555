"""The catalog service's settings: backend_kit's standard fields plus its own."""

from __future__ import annotations

from pydantic import Field, HttpUrl
from pydantic_settings import SettingsConfigDict

from backend_kit import SecretURL, Settings


class CatalogSettings(Settings):
    """Read from the environment (and ``.env``) like every backend_kit setting.

    Every variable carries the service's prefix, the standard ones included:
    ``CATALOG_DATABASE_URL``, ``CATALOG_CACHE_URL``, ``CATALOG_LOG_FORMAT``, and the
    service's own ``CATALOG_RATES_URL``, ``CATALOG_RATES_TIMEOUT``.
    """

    model_config = SettingsConfigDict(env_prefix="CATALOG_")

    service_name: str = Field(default="catalog", min_length=1)
    database_url: SecretURL | None = Field(
        default=SecretURL("sqlite:///catalog.sqlite3"),
        description="Where the products are stored: sqlite:///relative.sqlite3 or "
        "sqlite:////absolute/path.sqlite3.",
    )
    rates_url: HttpUrl | None = Field(
        default=None,
        description="Base URL of the exchange-rate service (GET <url>/rates?base=USD); "
        "unset, the service uses built-in offline rates.",
    )
    rates_timeout: float = Field(
        default=2.0, gt=0.0, le=30.0, description="Connect and read timeout per call, seconds."
    )
    rates_cache_seconds: float = Field(
        default=60.0, gt=0.0, description="How long fetched exchange rates are reused."
    )
