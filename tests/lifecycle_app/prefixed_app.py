"""A Flask service whose settings class has a prefix the gunicorn master does not know
(no BACKEND_KIT_SETTINGS): a bad value is only found when a worker loads it."""

from __future__ import annotations

from flask import Flask
from pydantic_settings import SettingsConfigDict

from backend_kit import Settings, load_settings
from backend_kit.flask import init_app


class PrefixedSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="PREFIXED_")


app = init_app(Flask("prefixed"), settings=load_settings(PrefixedSettings))
