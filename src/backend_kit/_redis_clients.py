"""Redis URLs for every deployment, and the one place that turns them into clients.

A URL names one of three kinds of deployment:

- ``redis://``, ``rediss://`` (TLS) and ``unix://``: one server;
- ``redis+sentinel://[password@]host1:port1,host2:port2/service_name/db``: the master
  that the Sentinels name for *service_name*, found again after a failover;
- ``redis+cluster://host1:port1,host2:port2``: a Redis Cluster, reached through any of
  the nodes listed.

``rediss+sentinel://`` and ``rediss+cluster://`` are the same over TLS. TLS options
(``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs``,
``ssl_check_hostname``) come from the URL's query string, or else from the defaults the
caller passes (the ``REDIS_SSL_*`` settings).

Every client made here has the same policy, whatever the kind and whatever the URL says:
connect and read timeouts of *timeout* seconds, no retries of its own (the caller is the
one retry layer), no health-check pings, maintenance notifications off. The cache, the
Redis health check, and any other state the kit shares in Redis build their clients
here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ._redact import mask_url

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

__all__ = [
    "TLS_OPTIONS",
    "RedisTarget",
    "async_redis_client",
    "parse_redis_url",
    "ping_every_node",
    "redis_client",
    "redis_errors",
]

Kind = Literal["server", "sentinel", "cluster"]

#: Schemes understood here: (kind, TLS).
_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("server", False),
    "rediss": ("server", True),
    "unix": ("server", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_DEFAULT_PORT: dict[Kind, int] = {"server": 6379, "sentinel": 26379, "cluster": 6379}

#: TLS options a URL's query string (or a setting) may give.
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname")
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_CERT_REQS = ("none", "optional", "required")
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
# Accepted for compatibility with redis-py URLs; overridden by the policy above.
_OVERRIDDEN = frozenset(
    {
        "socket_timeout",
        "socket_connect_timeout",
        "socket_keepalive",
        "retry_on_timeout",
        "max_connections",
        "health_check_interval",
        "timeout",
    }
)
_KNOWN = frozenset({"db", "client_name", "protocol", *TLS_OPTIONS, *_OVERRIDDEN})
_SENTINEL_ONLY = frozenset({"sentinel_password", "sentinel_username"})

_SCHEME_LIST = (
    "redis://host:port/db, rediss://host:port/db, unix:///path/to/redis.sock, "
    "redis+sentinel://[password@]host1:port1,host2:port2/service_name/db or "
    "redis+cluster://host1:port1,host2:port2"
)


@dataclass(frozen=True)
class RedisTarget:
    """A parsed, validated Redis URL: what to connect to and how.

    *options* are the connection keyword arguments for the data nodes (credentials,
    database, TLS); *nodes* the Sentinels or the cluster's startup nodes;
    *sentinel_options* the keyword arguments for the connections to the Sentinels.
    """

    kind: Kind
    url: str = field(repr=False)
    tls: bool
    options: dict[str, Any] = field(repr=False)
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    sentinel_options: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def display(self) -> str:
        """The URL with its credentials masked, for logs and errors."""
        return mask_url(self.url)


def parse_redis_url(url: str, *, tls_defaults: Mapping[str, Any] | None = None) -> RedisTarget:
    """Parse and validate *url* (any of the forms in this module's docstring).

    *tls_defaults* fill in the TLS options the URL's query string leaves out (for a
    TLS scheme only). Raises `ValueError` with a message that says what is wrong and
    never quotes a password.
    """
    scheme, sep, _rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _SCHEMES:
        raise ValueError(f"expected {_SCHEME_LIST}")
    kind, tls = _SCHEMES[scheme]
    url = _with_quoted_userinfo(url)
    parts = urlsplit(url)
    query = _query(parts.query, kind)
    tls_options = _tls_options(query, tls, tls_defaults or {})
    if kind == "server":
        return _server_target(url, scheme, tls, query, tls_options)
    username, password, hosts = _split_netloc(parts.netloc)
    nodes = tuple(_node(host, _DEFAULT_PORT[kind]) for host in hosts)
    options: dict[str, Any] = {"username": username, "password": password, **tls_options}
    if "client_name" in query:
        options["client_name"] = query["client_name"]
    segments = [segment for segment in parts.path.split("/") if segment]
    if kind == "cluster":
        if segments not in ([], ["0"]) or query.get("db", "0") != "0":
            raise ValueError(
                "a Redis Cluster has only database 0: write redis+cluster://host1:port1,"
                "host2:port2 with no path"
            )
        return RedisTarget(kind, url, tls, options, nodes)
    if not segments or len(segments) > 2:
        raise ValueError(
            "expected the service name after the Sentinels, and optionally a database: "
            "redis+sentinel://host1:26379,host2:26379/mymaster/0"
        )
    options["db"] = _database(segments[1] if len(segments) == 2 else query.get("db", "0"))
    sentinel_options: dict[str, Any] = {
        "username": query.get("sentinel_username"),
        "password": query.get("sentinel_password"),
        **({"ssl": True, **tls_options} if tls else {}),
    }
    return RedisTarget(kind, url, tls, options, nodes, unquote(segments[0]), sentinel_options)


def _with_quoted_userinfo(url: str) -> str:
    """*url* with its userinfo (everything up to the last ``@``) percent-encoded, so that
    a password holding ``/``, ``#``, ``?``, ``:`` or ``@`` reaches the parsers whole.
    Escapes already written are kept (decoded, then encoded once)."""
    scheme, _, rest = url.partition("://")
    userinfo, at, after = rest.rpartition("@")
    if not at:
        return url
    name, colon, secret = userinfo.partition(":")
    quoted = quote(unquote(name), safe="")
    if colon:
        quoted += ":" + quote(unquote(secret), safe="")
    return f"{scheme}://{quoted}@{after}"


def _query(text: str, kind: Kind) -> dict[str, str]:
    allowed = _KNOWN | _SENTINEL_ONLY if kind == "sentinel" else _KNOWN
    query: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name not in allowed:
            raise ValueError(
                f"unknown query parameter {name!r}; known ones are "
                + ", ".join(sorted(allowed - _OVERRIDDEN))
            )
        query[name] = value
    return query


def _tls_options(
    query: Mapping[str, str], tls: bool, defaults: Mapping[str, Any]
) -> dict[str, Any]:
    given = {name: query[name] for name in TLS_OPTIONS if name in query}
    if given and not tls:
        raise ValueError(
            f"{sorted(given)[0]} needs TLS: use rediss:// (or rediss+sentinel://, "
            "rediss+cluster://) instead of a plain scheme"
        )
    if not tls:
        return {}
    options = {
        name: value for name, value in defaults.items() if value is not None and name in TLS_OPTIONS
    }
    options.update(given)
    for name in _TLS_FILES:
        if name in options:
            options[name] = path = os.fspath(options[name])
            if not os.path.isfile(path):
                raise ValueError(f"{name}: no file at {path}")
    if "ssl_keyfile" in options and "ssl_certfile" not in options:
        raise ValueError("ssl_keyfile needs ssl_certfile (the client certificate) too")
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None:
        reqs = str(reqs).lower()
        if reqs not in _CERT_REQS:
            raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
        options["ssl_cert_reqs"] = reqs
    check = options.get("ssl_check_hostname")
    if isinstance(check, str):
        if check.lower() not in _BOOLEANS:
            raise ValueError("ssl_check_hostname must be true or false")
        options["ssl_check_hostname"] = _BOOLEANS[check.lower()]
    return options


def _server_target(
    url: str, scheme: str, tls: bool, query: Mapping[str, str], tls_options: dict[str, Any]
) -> RedisTarget:
    parts = urlsplit(url)
    if scheme == "unix":
        if not parts.path:
            raise ValueError("expected the socket's path: unix:///path/to/redis.sock")
    else:
        try:
            port = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        if not parts.hostname:
            raise ValueError(f"expected a host: {scheme}://host:port/db")
        if port == 0:
            raise ValueError("the port must be a number from 1 to 65535")
        segments = [segment for segment in parts.path.split("/") if segment]
        if len(segments) > 1:
            raise ValueError(
                f"expected at most a database number after the host: {scheme}://host:port/0"
            )
        if segments:
            _database(segments[0])
    if "db" in query:
        _database(query["db"])
    # The rest (credentials, database, path) is read by redis-py's own parser later.
    return RedisTarget("server", url, tls, dict(tls_options))


def _split_netloc(netloc: str) -> tuple[str | None, str | None, list[str]]:
    userinfo, at, hostlist = netloc.rpartition("@")
    username: str | None = None
    password: str | None = None
    if at:
        name, colon, secret = userinfo.partition(":")
        # user:password@ and :password@ as in redis://; a bare password@ as Sentinel
        # URLs usually write it.
        username, password = (name or None, secret) if colon else (None, name)
        username = unquote(username) if username else None
        password = unquote(password) if password else None
    hosts = [host.strip() for host in hostlist.split(",")]
    if not hostlist or any(not host for host in hosts):
        raise ValueError("expected one or more host:port pairs separated by commas")
    return username, password, hosts


def _node(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not a valid host:port")
        port_text = rest[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host or any(char in host for char in " /?#@"):
        raise ValueError(f"{text!r} is not a valid host:port")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"the port of {text!r} must be a number from 1 to 65535")
    return host, int(port_text)


def _database(text: str) -> int:
    if not text.isdigit():
        raise ValueError("the database must be a number, for example /0")
    return int(text)


# -- clients -------------------------------------------------------------------------


def _policy(timeout: float) -> dict[str, Any]:
    from redis.maint_notifications import MaintNotificationsConfig

    return {
        # Maintenance notifications (RESP3) would swap in a 10 s "relaxed" timeout
        # during a server's maintenance: the bound must hold then too.
        "maint_notifications_config": MaintNotificationsConfig(enabled=False),
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "socket_keepalive": True,
        "health_check_interval": 0,
    }


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a call through these clients raises when the deployment fails (cluster
    errors are not `redis.RedisError` subclasses)."""
    import redis
    from redis.exceptions import RedisClusterException

    return (redis.RedisError, RedisClusterException, OSError)


def redis_client(
    target: RedisTarget, *, timeout: float, max_connections: int = 64
) -> redis.Redis | redis.cluster.RedisCluster:
    """A pooled synchronous client for *target*: `redis.Redis` for one server or the
    Sentinel-named master, `redis.cluster.RedisCluster` for a cluster.

    A cluster client reads the cluster's layout when it is created, so this raises the
    cluster's error when no node answers; the other kinds connect on first use.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    policy = _policy(timeout)
    no_retry = Retry(NoBackoff(), 0)
    if target.kind == "server":
        from redis.connection import parse_url

        options = {**parse_url(target.url), **target.options, **policy}  # type: ignore[no-untyped-call]
        options.update(retry_on_error=[], retry=no_retry, max_connections=max_connections)
        _drop_tcp_options(options)
        return redis.Redis(connection_pool=redis.ConnectionPool(**options))
    if target.kind == "sentinel":
        from redis.sentinel import Sentinel

        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes),
            min_other_sentinels=0,
            sentinel_kwargs={**target.sentinel_options, **policy, "retry": Retry(NoBackoff(), 0)},
        )
        assert target.service_name is not None
        return sentinel.master_for(  # type: ignore[no-any-return,no-untyped-call]
            target.service_name,
            redis_class=redis.Redis,
            **_ssl_flag(target),
            **target.options,
            **policy,
            retry=no_retry,
            retry_on_error=[],
            max_connections=max_connections,
        )
    from redis.cluster import ClusterNode, RedisCluster

    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],  # type: ignore[no-untyped-call]
        retry=no_retry,
        **_ssl_flag(target),
        **target.options,
        **policy,
        max_connections=max_connections,
    )


async def async_redis_client(
    target: RedisTarget, *, timeout: float, max_connections: int = 64
) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
    """`redis_client` for asyncio: `redis.asyncio.Redis` or
    `redis.asyncio.cluster.RedisCluster`, for use in the running event loop. A cluster
    client reads the cluster's layout before it is returned, and raises the cluster's
    error when no node answers."""
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    policy = _policy(timeout)
    if target.kind == "server":
        from redis.asyncio.connection import parse_url

        options = {**parse_url(target.url), **target.options, **policy}
        options.update(
            retry_on_error=[], retry=Retry(NoBackoff(), 0), max_connections=max_connections
        )
        _drop_tcp_options(options)
        return redis.asyncio.Redis(connection_pool=redis.asyncio.ConnectionPool(**options))
    if target.kind == "sentinel":
        from redis.asyncio.sentinel import Sentinel

        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes),
            min_other_sentinels=0,
            sentinel_kwargs={**target.sentinel_options, **policy, "retry": Retry(NoBackoff(), 0)},
        )
        assert target.service_name is not None
        return sentinel.master_for(  # type: ignore[no-any-return]
            target.service_name,
            redis_class=redis.asyncio.Redis,
            **_ssl_flag(target),
            **target.options,
            **policy,
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[],
            max_connections=max_connections,
        )
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        retry=Retry(NoBackoff(), 0),
        retry_on_error=[],
        **_ssl_flag(target),
        **target.options,
        **policy,
        max_connections=max_connections,
    )
    # Read the layout now, once: left to the first commands, concurrent ones would
    # race the initialisation, which closes the connections some of them are using
    # (redis-py hides that behind its retries, which are off here).
    try:
        await cluster.initialize()
    except BaseException:
        await cluster.aclose()
        raise
    return cluster


def _drop_tcp_options(options: dict[str, Any]) -> None:
    """A Unix socket has no keepalive option (its connections refuse the argument)."""
    if "path" in options:
        options.pop("socket_keepalive", None)


def _ssl_flag(target: RedisTarget) -> dict[str, Any]:
    return {"ssl": True} if target.tls else {}


def ping_every_node(client: redis.Redis | redis.cluster.RedisCluster) -> None:
    """``PING`` what a service needs: the one server (or Sentinel-named master), or
    every primary of a cluster. Raises the deployment's error when one does not answer."""
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        client.ping(target_nodes=RedisCluster.PRIMARIES)
    else:
        client.ping()


def close_client(client: redis.Redis | redis.cluster.RedisCluster) -> None:
    """Close *client* and its pooled connections."""
    from redis.cluster import RedisCluster
    from redis.sentinel import SentinelConnectionPool

    client.close()
    if isinstance(client, RedisCluster):
        return
    pool = client.connection_pool
    pool.disconnect()
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()


def tls_options_from_settings(settings: Any) -> dict[str, Any]:
    """The ``REDIS_SSL_*`` settings as TLS options for `parse_redis_url`."""
    options = {
        "ssl_ca_certs": settings.redis_ssl_ca_certs,
        "ssl_certfile": settings.redis_ssl_certfile,
        "ssl_keyfile": settings.redis_ssl_keyfile,
        "ssl_cert_reqs": settings.redis_ssl_cert_reqs,
    }
    return {name: value for name, value in options.items() if value is not None}
