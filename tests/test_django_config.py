"""DATABASES and CACHES entries from backend_kit's URLs."""

from __future__ import annotations

import time

import pytest
from pydantic_settings import SettingsConfigDict

from backend_kit import ConfigError, Settings, load_settings
from backend_kit.django import cache_from_url, database_from_url
from tests.servers import silent_tcp_server


class ShopSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="SHOP_")


def test_postgres_url_becomes_a_database_entry() -> None:
    entry = database_from_url("postgres://app:p%40ss@db.internal:5433/billing?sslmode=require")
    assert entry == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "billing",
        "USER": "app",
        "PASSWORD": "p@ss",
        "HOST": "db.internal",
        "PORT": "5433",
        "OPTIONS": {
            "sslmode": "require",
            "connect_timeout": 5,
            "options": "-c statement_timeout=10000",
            "tcp_user_timeout": 15000,
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        },
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
        "BACKEND_KIT_READ_TIMEOUT": 11.0,
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
    assert database_from_url(url) == {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": name,
        "OPTIONS": {"timeout": 10.0},
    }


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


def test_timeouts_come_from_the_settings() -> None:
    settings = load_settings(
        database_url="postgres://u@h/db?options=-c%20search_path%3Dshop",
        database_statement_timeout=1.5,
    )
    options = database_from_url(settings)["OPTIONS"]
    assert options["options"] == "-c search_path=shop -c statement_timeout=1500"
    assert options["tcp_user_timeout"] == 6500
    mysql = database_from_url("mysql://u:p@h/db", settings=settings)["OPTIONS"]
    assert (mysql["read_timeout"], mysql["write_timeout"]) == (2, 2)
    sqlite = database_from_url("sqlite:///x.db", statement_timeout=0.25)
    assert sqlite["OPTIONS"] == {"timeout": 0.25}


def test_the_default_statement_timeout_is_below_gunicorns_worker_timeout() -> None:
    default = Settings.model_fields["database_statement_timeout"].default
    assert 0 < default < 30


def test_errors_name_the_prefixed_variable() -> None:
    # Loading the settings refuses the scheme already, naming the prefixed variable.
    with pytest.raises(ConfigError) as loading:
        load_settings(ShopSettings, database_url="oracle://u:hunter22@h/x")
    assert "SHOP_DATABASE_URL" in str(loading.value)
    assert "hunter22" not in str(loading.value)
    settings = load_settings(ShopSettings)
    with pytest.raises(ConfigError) as caught:
        database_from_url("oracle://u:hunter22@h/x", settings=settings)
    assert "SHOP_DATABASE_URL" in str(caught.value)
    assert "hunter22" not in str(caught.value)
    with pytest.raises(ConfigError, match="SHOP_DATABASE_URL: required"):
        database_from_url(None, settings=load_settings(ShopSettings))
    with pytest.raises(ConfigError, match="SHOP_CACHE_URL"):
        cache_from_url("memcached://x", settings=settings)


def _connect(entry: dict[str, object]):  # type: ignore[no-untyped-def]
    psycopg = pytest.importorskip("psycopg")
    return psycopg.connect(
        host=entry["HOST"],
        port=entry["PORT"] or None,
        user=entry["USER"],
        password=entry["PASSWORD"] or None,
        dbname=entry["NAME"],
        autocommit=True,
        **entry["OPTIONS"],  # type: ignore[arg-type]
    )


def test_a_statement_past_the_timeout_fails_in_bounded_time(postgres_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    entry = database_from_url(postgres_url, statement_timeout=0.5)
    with _connect(entry) as connection:
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            connection.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 10  # 0.5 s, with a wide margin for a busy box
        # The connection is still usable afterwards: only the statement was cancelled.
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_a_silent_server_costs_the_connect_timeout_not_forever() -> None:
    psycopg = pytest.importorskip("psycopg")
    with silent_tcp_server() as port:
        entry = database_from_url(
            f"postgres://u:secret@127.0.0.1:{port}/db", connect_timeout=2, statement_timeout=1
        )
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            _connect(entry)
        elapsed = time.monotonic() - started
    # libpq counts whole seconds and waits up to twice that on some versions.
    assert elapsed < 15


def _django_connection(entry: dict[str, object]):  # type: ignore[no-untyped-def]
    """A Django connection (not one of the project's aliases) for *entry*."""
    from django.db.utils import ConnectionHandler

    return ConnectionHandler({"default": entry})["default"]


def test_a_hung_postgres_costs_the_read_timeout(postgres_url: str, django_db_blocker) -> None:  # type: ignore[no-untyped-def]
    """Behind a proxy that stops forwarding, statement_timeout cannot help (the server's
    answer never arrives); the client-side read timeout ends the wait."""
    pytest.importorskip("psycopg")
    from urllib.parse import urlsplit

    from django.db import OperationalError

    from tests.faults.proxy import tcp_proxy

    target = urlsplit(postgres_url)
    with tcp_proxy(target.port or 5432) as proxy, django_db_blocker.unblock():
        url = target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}").geturl()
        connection = _django_connection(
            database_from_url(url, statement_timeout=0.5, connect_timeout=2)
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                assert cursor.fetchone() == (1,)
                # The server's own timeout answers first while it can answer.
                with pytest.raises(OperationalError, match="statement timeout"):
                    cursor.execute("SELECT pg_sleep(30)")
            proxy.set_mode("hang")
            started = time.monotonic()
            with (
                pytest.raises(OperationalError, match=r"did not answer within 1.5 s"),
                connection.cursor() as cursor,
            ):
                cursor.execute("SELECT 1")
            assert time.monotonic() - started < 10  # 1.5 s, with a wide margin
            assert connection.errors_occurred
            assert not connection.is_usable()  # the socket was shut down
            proxy.set_mode("pass")
            connection.close()
            with connection.cursor() as cursor:  # a new connection works again
                cursor.execute("SELECT 2")
                assert cursor.fetchone() == (2,)
        finally:
            connection.close()


def test_the_health_check_of_a_reused_connection_is_bounded_too(
    postgres_url: str,
    django_db_blocker,  # type: ignore[no-untyped-def]
) -> None:
    pytest.importorskip("psycopg")
    from urllib.parse import urlsplit

    from tests.faults.proxy import tcp_proxy

    target = urlsplit(postgres_url)
    with tcp_proxy(target.port or 5432) as proxy, django_db_blocker.unblock():
        url = target._replace(netloc=f"{target.username}@127.0.0.1:{proxy.port}").geturl()
        connection = _django_connection(database_from_url(url, statement_timeout=0.5))
        try:
            connection.ensure_connection()
            proxy.set_mode("hang")
            started = time.monotonic()
            assert connection.is_usable() is False
            assert time.monotonic() - started < 10
        finally:
            proxy.set_mode("pass")
            connection.close()
