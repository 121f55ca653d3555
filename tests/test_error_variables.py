"""Every message that tells the user to set a variable names it as they set it: with
the settings class's prefix."""

from __future__ import annotations

import uuid

import pytest
from pydantic_settings import SettingsConfigDict
from structlog.testing import capture_logs

from backend_kit import ConfigError, Settings, default_cache, load_settings
from backend_kit.django import cache_from_url, database_from_url


class ShopSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="SHOP_")


def test_pickle_without_a_signing_key_names_the_prefixed_variables() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(ShopSettings, cache_serializer="pickle")
    message = str(caught.value)
    assert "SHOP_CACHE_SIGNING_KEY" in message
    assert "required when SHOP_CACHE_SERIALIZER=pickle" in message
    assert "use SHOP_CACHE_SERIALIZER=json" in message


def test_unprefixed_settings_keep_the_plain_names() -> None:
    with pytest.raises(ConfigError, match="required when CACHE_SERIALIZER=pickle"):
        load_settings(cache_serializer="pickle")


def test_django_helpers_name_the_prefixed_variable_from_the_settings_object() -> None:
    settings = load_settings(ShopSettings)
    with pytest.raises(ConfigError, match=r"SHOP_DATABASE_URL: required by the Django"):
        database_from_url(None, settings=settings)
    with pytest.raises(ConfigError, match=r"SHOP_CACHE_URL: the scheme 'memcached'"):
        cache_from_url("memcached://cache:11211", settings=settings)
    with pytest.raises(ConfigError, match=r"SHOP_DATABASE_URL: the scheme 'oracle'"):
        database_from_url("oracle://u@h/db", settings=settings)
    # Loaded from the settings, the scheme is refused at load, under the same name.
    with pytest.raises(ConfigError, match=r"SHOP_DATABASE_URL: the scheme oracle://"):
        load_settings(ShopSettings, database_url="oracle://u@h/db")


def test_django_helpers_use_the_active_settings_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from backend_kit._active import set_active_settings

    previous = set_active_settings(load_settings(ShopSettings))
    try:
        with pytest.raises(ConfigError, match=r"SHOP_DATABASE_URL: required by the Django"):
            database_from_url(None)
    finally:
        set_active_settings(previous)


def test_cache_messages_name_the_prefixed_variables(redis_url: str) -> None:
    """The cache built from a prefixed settings class names SHOP_CACHE_SERIALIZER and
    SHOP_CACHE_SIGNING_KEY in what it raises and logs."""
    prefix = f"bk-prefixed-{uuid.uuid4().hex[:8]}:"
    settings = load_settings(ShopSettings, cache_url=redis_url, cache_key_prefix=prefix)
    cache = default_cache(settings)
    with pytest.raises(
        TypeError, match="set SHOP_CACHE_SERIALIZER=pickle together with SHOP_CACHE_SIGNING_KEY"
    ):
        cache.set("unencodable", {1, 2}, ttl=60)
    signed = default_cache(
        load_settings(
            ShopSettings,
            cache_url=redis_url,
            cache_key_prefix=prefix,
            cache_serializer="pickle",
            cache_signing_key="k" * 32,
        )
    )
    cache.set("plain", 1, ttl=60)  # JSON, unsigned: refused in pickle mode
    with capture_logs() as logs:
        assert signed.get("plain") is None
    [warning] = [log for log in logs if log["event"] == "cache_signature_mismatch"]
    assert "SHOP_CACHE_SERIALIZER is pickle" in warning["reason"]
    assert "SHOP_CACHE_SIGNING_KEY_FALLBACKS" in warning["effect"]
    cache.clear()
