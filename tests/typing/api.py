"""The public API as a user types it; checked with ``mypy --strict``, never run.

A change that breaks a user's type check breaks this file first.
"""

from __future__ import annotations

from pydantic import BaseModel, SecretStr
from pydantic_settings import SettingsConfigDict

import backend_kit
from backend_kit.testing import override_settings


class Db(BaseModel):
    port: int = 5432


class MySettings(backend_kit.Settings):
    model_config = SettingsConfigDict(env_prefix="MYAPP_")

    db: Db = Db()
    api_key: SecretStr | None = None


def settings_keep_their_class() -> None:
    mine: MySettings = backend_kit.load_settings(MySettings, service_name="x")
    port: int = mine.db.port
    base: backend_kit.Settings = backend_kit.load_settings()
    active: MySettings = backend_kit.get_settings(MySettings)
    configured: backend_kit.Settings = backend_kit.configure(mine)
    url: str | None = base.database_url.get_secret_value() if base.database_url else None
    with override_settings(log_level="DEBUG") as overridden:
        level: str = overridden.log_level
    try:
        backend_kit.load_settings()
    except backend_kit.ConfigError as error:
        variables: list[str] = [problem.variable for problem in error.problems]
    is_on: bool = backend_kit.is_configured()
    backend_kit.reset()
    del port, active, configured, url, level, variables, is_on
