"""The catalog service's settings: backend_kit's standard fields plus its own."""

from __future__ import annotations

from pydantic import Field, HttpUrl

from backend_kit import SecretURL, Settings


class CatalogSettings(Settings):
    """Read from the environment (and ``.env``) like every backend_kit setting.

    No ``env_prefix``: the standard variables keep the names platforms set
    (``DATABASE_URL``, ``CACHE_URL``, ``LOG_FORMAT``), and the fields of the service's
    own carry their purpose in their name (``RATES_URL``, ``RATES_TIMEOUT``).
    """

    service_name: str = Field(default="catalog", min_length=1)
    database_url: SecretURL | None = Field(
        default=SecretURL("sqlite:///catalog.sqlite3"),
        description="Where the products are stored: sqlite:///relative.sqlite3 or "
        "sqlite:////absolute/path.sqlite3.",
    )
    rates_url: HttpUrl | None = Field(
        default=None,
        description="Base URL of the exchange-rate service (GET {RATES_URL}/rates?base=USD); "
        "unset, the service uses built-in offline rates.",
    )
    rates_timeout: float = Field(
        default=2.0, gt=0.0, le=30.0, description="Connect and read timeout per call, seconds."
    )
    rates_cache_seconds: float = Field(
        default=60.0, gt=0.0, description="How long fetched exchange rates are reused."
    )
