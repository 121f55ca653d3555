"""The shop's settings: backend_kit's standard fields plus the project's own."""

from __future__ import annotations

from pydantic import Field, HttpUrl, SecretStr
from pydantic_settings import SettingsConfigDict

from backend_kit import SecretURL, Settings


class ShopSettings(Settings):
    """Everything the project reads from the environment, read once, typed.

    Every variable carries the project's prefix, the standard ones included:
    ``SHOP_DATABASE_URL``, ``SHOP_CACHE_URL``, ``SHOP_LOG_FORMAT``, ``SHOP_SECRET_KEY``.
    """

    model_config = SettingsConfigDict(env_prefix="SHOP_")

    service_name: str = Field(default="shop", min_length=1)
    database_url: SecretURL | None = Field(
        default=SecretURL("sqlite:///shop.sqlite3"),
        description="Database: sqlite:///relative.sqlite3, sqlite:////absolute.sqlite3 "
        "or postgres://user:password@host:5432/name.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Django's SECRET_KEY; required in production, a development key "
        "is used elsewhere.",
    )
    allowed_hosts: list[str] = Field(
        default=["127.0.0.1", "localhost"],
        description='Host names the project answers for, as JSON: ["shop.example.com"].',
    )
    rates_url: HttpUrl | None = Field(
        default=None,
        description="Base URL of the exchange-rate service (GET <url>/rates?base=USD); "
        "unset, the project uses built-in offline rates.",
    )
    rates_timeout: float = Field(
        default=2.0, gt=0.0, le=30.0, description="Connect and read timeout per call, seconds."
    )
    rates_cache_seconds: float = Field(
        default=60.0, gt=0.0, description="How long fetched exchange rates are reused."
    )
    celery_queue: str = Field(
        default="shop",
        min_length=1,
        description="The Celery queue the project publishes to and its worker consumes.",
    )
