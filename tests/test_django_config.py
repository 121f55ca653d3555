"""DATABASES and CACHES entries from backend_kit's URLs."""

from __future__ import annotations

import pytest

from backend_kit import ConfigError, load_settings
from backend_kit.django import cache_from_url, database_from_url


def test_postgres_url_becomes_a_database_entry() -> None:
    entry = database_from_url("postgres://app:p%40ss@db.internal:5433/billing?sslmode=require")
    assert entry == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "billing",
        "USER": "app",
        "PASSWORD": "p@ss",
        "HOST": "db.internal",
        "PORT": "5433",
        "OPTIONS": {"sslmode": "require", "connect_timeout": 5},
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:///db.sqlite3", "db.sqlite3"),
        ("sqlite:////var/lib/app/db.sqlite3", "/var/lib/app/db.sqlite3"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls(url: str, name: str) -> None:
    assert database_from_url(url) == {"ENGINE": "django.db.backends.sqlite3", "NAME": name}


def test_database_entry_from_settings_secret() -> None:
    settings = load_settings(database_url="postgresql://u:pw@h/db")
    assert database_from_url(settings.database_url)["PASSWORD"] == "pw"


def test_unknown_scheme_names_the_variable_and_masks_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        database_from_url("oracle://u:hunter22@h/x")
    assert "DATABASE_URL" in str(caught.value)
    assert "hunter22" not in str(caught.value)


def test_missing_database_url() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL: required by the Django settings"):
        database_from_url(None)


def test_memory_and_redis_caches() -> None:
    assert cache_from_url("memory://")["BACKEND"].endswith("LocMemCache")
    redis = cache_from_url(load_settings(cache_url="redis://:pw@cache:6379/2").cache_url)
    assert redis["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert redis["LOCATION"] == "redis://:pw@cache:6379/2"
    assert redis["OPTIONS"] == {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}
    with pytest.raises(ConfigError, match="CACHE_URL"):
        cache_from_url("memcached://x")


@pytest.mark.parametrize(
    "url", ["redis+sentinel://pw-canary@s1:26379/svc/0", "redis+cluster://:pw-canary@n1:6379"]
)
def test_sentinel_and_cluster_urls_are_refused_for_djangos_own_cache(url: str) -> None:
    with pytest.raises(ConfigError, match="CACHE_URL: Django's built-in Redis cache") as error:
        cache_from_url(url)
    assert "pw-canary" not in str(error.value)


def test_database_entry_connects_to_the_real_postgres(postgres_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    entry = database_from_url(postgres_url)
    with psycopg.connect(
        host=entry["HOST"],
        port=entry["PORT"] or None,
        user=entry["USER"],
        password=entry["PASSWORD"] or None,
        dbname=entry["NAME"],
        **entry["OPTIONS"],
    ) as connection:
        assert connection.execute("select 1").fetchone() == (1,)
