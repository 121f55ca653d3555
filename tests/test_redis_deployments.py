"""The cache and the Redis health check on Redis as deployed at scale: TLS with a
private CA and client certificates, Sentinel failover, and a three-master Cluster.
Every deployment is made of real ``redis-server`` processes on free loopback ports."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from backend_kit import (
    CircuitBreaker,
    CircuitOpenError,
    ConfigError,
    RedisCache,
    cached,
    circuit_breaker,
    load_settings,
)
from backend_kit._cache._keys import function_name
from backend_kit._redis_clients import parse_redis_url, redis_client
from backend_kit.health import (
    CheckResult,
    HealthCheck,
    HealthRegistry,
    HealthRunner,
    checks_from_settings,
    redis_check,
)

from .redis_deployments import (
    Cluster,
    redis_cluster,
    redis_process,
    sentinel_group,
    tls_redis_server,
)
from .servers import silent_tcp_server


def run_one(check: HealthCheck) -> CheckResult:
    return HealthRunner(HealthRegistry([check]), cache_seconds=0, deadline=30).ready().checks[0]


class CallsUnderLoad:
    """Four threads calling ``function(item)`` for every item, over and over, until the
    block ends (at most 60 s). Each answer must be ``item * 10``; an error is counted
    in `errors`, never swallowed."""

    def __init__(self, function: Callable[[int], int], items: Iterable[int]) -> None:
        self.function = function
        self.items = list(items)
        self.errors: list[BaseException] = []
        self.answered = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call_in_a_loop) for _ in range(4)]

    def _call_in_a_loop(self) -> None:
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            for item in self.items:
                try:
                    assert self.function(item) == item * 10
                    self.answered += 1
                except BaseException as exc:  # counted, never swallowed
                    self.errors.append(exc)
            time.sleep(0.002)

    def __enter__(self) -> CallsUnderLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


# -- URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind", "nodes", "service"),
    [
        ("redis://127.0.0.1:6379/0", "server", (), None),
        ("rediss://:pw@cache.internal:6380/2?ssl_cert_reqs=none", "server", (), None),
        ("unix:///run/redis/redis.sock?db=3", "server", (), None),
        (
            "redis+sentinel://s3cret@10.0.0.1:26379,10.0.0.2:26380/mymaster/1",
            "sentinel",
            (("10.0.0.1", 26379), ("10.0.0.2", 26380)),
            "mymaster",
        ),
        ("redis+sentinel://sentinel-a/mymaster", "sentinel", (("sentinel-a", 26379),), "mymaster"),
        (
            "redis+cluster://node-a:7000,[::1]:7001",
            "cluster",
            (("node-a", 7000), ("::1", 7001)),
            None,
        ),
    ],
)
def test_every_deployment_form_parses(
    url: str, kind: str, nodes: tuple[tuple[str, int], ...], service: str | None
) -> None:
    target = parse_redis_url(url)
    assert (target.kind, target.nodes, target.service_name) == (kind, nodes, service)
    assert load_settings(cache_url=url).cache_url.scheme == url.split("://")[0]


def test_sentinel_url_credentials_and_database() -> None:
    target = parse_redis_url(
        "redis+sentinel://user:pa%40ss@h1:1,h2:2/svc/4?sentinel_password=sent1nel"
    )
    assert (target.options["username"], target.options["password"]) == ("user", "pa@ss")
    assert target.options["db"] == 4
    assert target.sentinel_options["password"] == "sent1nel"
    # A bare password@ is the password, as Sentinel URLs usually write it.
    assert parse_redis_url("redis+sentinel://pw@h1/svc").options["password"] == "pw"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://cache:6379", "expected memory:// or redis://host:port/db"),
        ("redis://cache:99999/0", "the port must be a number from 1 to 65535"),
        ("redis://cache:6379/zero", "the database must be a number"),
        ("redis:///0", "expected a host"),
        ("unix://", "expected the socket's path"),
        ("redis+sentinel://h1:26379,h2:26379", "expected the service name"),
        ("redis+sentinel://h1:26379/svc/0/extra", "expected the service name"),
        ("redis+sentinel://h1:port/svc", "the port of 'h1:port' must be a number"),
        ("redis+cluster://", "expected one or more host:port pairs"),
        ("redis+cluster://h1:7000,,h2:7001", "expected one or more host:port pairs"),
        ("redis+cluster://h1:7000/3", "a Redis Cluster has only database 0"),
        ("redis://cache:6379/0?ssl_ca_certs=/etc/ca.pem", "ssl_ca_certs needs TLS"),
        ("rediss://cache:6379/0?ssl_ca_certs=/no/such/ca.pem", "ssl_ca_certs: no file at"),
        ("rediss://cache:6379/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
        ("redis://cache:6379/0?sockettimeout=1", "unknown query parameter 'sockettimeout'"),
    ],
)
def test_a_malformed_url_is_a_config_error_naming_the_variable(url: str, message: str) -> None:
    password_url = url.replace("://", "://:hunter2-canary@", 1) if "@" not in url else url
    for candidate in {url, password_url}:
        with pytest.raises(ConfigError) as error:
            load_settings(cache_url=candidate)
        text = str(error.value)
        assert "CACHE_URL" in text
        assert message in text
        assert "hunter2-canary" not in text


def test_tls_settings_are_checked_at_load(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("not checked beyond existing")
    with pytest.raises(ConfigError) as error:
        load_settings(redis_ssl_keyfile=str(key), redis_ssl_ca_certs=str(tmp_path / "nope.pem"))
    text = str(error.value)
    assert "REDIS_SSL_KEYFILE: set REDIS_SSL_CERTFILE too" in text
    assert "REDIS_SSL_CA_CERTS: no file at" in text
    with pytest.raises(ConfigError, match="REDIS_SSL_CERT_REQS"):
        load_settings(redis_ssl_cert_reqs="sometimes")


def test_no_password_of_a_sentinel_url_is_shown() -> None:
    url = "redis+sentinel://master-canary@h1:26379/svc/0?sentinel_password=sentinel-canary"
    shown = [
        repr(RedisCache(url)),
        str(load_settings(cache_url=url).cache_url),
        parse_redis_url(url).display,
        repr(parse_redis_url(url)),
    ]
    for text in shown:
        assert "canary" not in text
        assert "h1:26379/svc/0" in text or "sentinel" in text


def test_config_check_through_the_real_cli(tmp_path: Path) -> None:
    script = Path(sysconfig.get_path("scripts")) / "backend-kit"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "backend_kit.cli"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("CACHE_")}

    def check(**variables: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, "config", "check"],
            cwd=tmp_path,
            env={**env, **variables},
            capture_output=True,
            text=True,
            timeout=60,
        )

    good = check(CACHE_URL="redis+sentinel://s3cret-canary@127.0.0.1:26379/mymaster/0")
    assert good.returncode == 0, good.stderr
    bad = check(
        CACHE_URL="redis+sentinel://s3cret-canary@127.0.0.1:26379",
        REDIS_SSL_CA_CERTS=str(tmp_path / "missing-ca.pem"),
    )
    assert bad.returncode == 2
    report = bad.stdout + bad.stderr
    assert "2 problems" in report
    assert "  - CACHE_URL: expected the service name after the Sentinels" in report
    assert "  - REDIS_SSL_CA_CERTS: no file at" in report
    assert "s3cret-canary" not in report


def test_every_kind_of_client_has_timeouts_and_no_retries_of_its_own() -> None:
    client = redis_client(parse_redis_url("redis+sentinel://127.0.0.1:1/svc/0"), timeout=0.2)
    master_kwargs = client.connection_pool.connection_kwargs
    assert master_kwargs["retry"].get_retries() == 0
    assert master_kwargs["socket_timeout"] == master_kwargs["socket_connect_timeout"] == 0.2
    for sentinel in client.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
        kwargs = sentinel.connection_pool.connection_kwargs
        assert kwargs["retry"].get_retries() == 0
        assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.2
    client.close()


def test_tls_reaches_the_sentinels_and_the_master_they_name(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("a CA bundle")
    url = f"rediss+sentinel://pw@127.0.0.1:1,127.0.0.1:2/svc/0?ssl_ca_certs={ca}"
    client = redis_client(parse_redis_url(url), timeout=0.2)
    pool = client.connection_pool
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    assert pool.connection_kwargs["ssl_ca_certs"] == str(ca)
    assert pool.connection_kwargs["password"] == "pw"
    for sentinel in pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
        kwargs = sentinel.connection_pool.connection_kwargs
        assert kwargs["ssl_ca_certs"] == str(ca)
        assert kwargs.get("password") is None  # the master's password is not the Sentinels'
        assert sentinel.connection_pool.connection_class.__name__ == "SSLConnection"
    client.close()


def test_a_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    with redis_process("--unixsocket", str(socket_path), "--unixsocketperm", "700"):
        url = f"unix://{socket_path}?db=1"
        cache = RedisCache(url, prefix="bk-unix:")
        assert cache.get_or_set("k", lambda: "over the socket", ttl=60) == "over the socket"
        assert cache.get("k") == "over the socket"

        async def never() -> str:
            raise AssertionError("the value is cached")

        assert asyncio.run(cache.aget_or_set("k", never, ttl=60)) == "over the socket"
        assert cache.fallbacks == 0
        assert run_one(redis_check(url, timeout=2)).status == "pass"
        cache.clear()
        cache.close()


def test_a_sentinel_that_never_answers_costs_a_bounded_time() -> None:
    with silent_tcp_server() as port:
        cache = RedisCache(f"redis+sentinel://127.0.0.1:{port}/svc/0", timeout=0.2)
        started = time.monotonic()
        assert cache.get_or_set("k", lambda: "loaded", ttl=60) == "loaded"
        assert time.monotonic() - started < 2.0
        result = run_one(redis_check(f"redis+sentinel://127.0.0.1:{port}/svc/0", timeout=0.3))
        assert result.status == "fail"
        cache.close()


# -- TLS -----------------------------------------------------------------------------


def test_tls_with_a_private_ca_and_a_client_certificate() -> None:
    with tls_redis_server() as server:
        # A generous timeout: a TLS handshake on a busy machine can take longer than 0.5 s.
        cache = RedisCache(server.url(), prefix="bk-tls:", timeout=5)
        assert cache.get_or_set("greeting", lambda: "hello", ttl=60) == "hello"
        assert cache.get("greeting") == "hello"
        assert cache.fallbacks == 0
        cache.check()
        assert run_one(redis_check(server.url(), timeout=2)).status == "pass"

        # The same through settings: the TLS options from REDIS_SSL_*, not the URL.
        certificates = server.certificates
        settings = load_settings(
            cache_url=f"rediss://127.0.0.1:{server.port}/0",
            redis_ssl_ca_certs=str(certificates.ca),
            redis_ssl_certfile=str(certificates.client_cert),
            redis_ssl_keyfile=str(certificates.client_key),
            health_check_timeout=5,
            health_deadline=6,
        )
        runner = HealthRunner(checks_from_settings(settings), settings=settings, cache_seconds=0)
        assert runner.ready().status == "pass"
        direct = redis_check(
            settings.cache_url,
            timeout=2,
            tls_options={"ssl_ca_certs": certificates.ca, "ssl_certfile": certificates.client_cert},
        )
        # A certificate without its key is refused locally, before any connection.
        assert run_one(direct).status == "fail"
        cache.clear()
        cache.close()


def test_tls_with_the_wrong_ca_or_without_a_client_certificate_fails_clearly() -> None:
    with tls_redis_server() as server:
        wrong_ca = run_one(redis_check(server.url(ca=server.certificates.other_ca), timeout=2))
        assert wrong_ca.status == "fail"
        assert "certificate verify failed" in (wrong_ca.output or "")

        cache = RedisCache(server.url(ca=server.certificates.other_ca), timeout=0.5)
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            cache.check()
        # Cached calls keep answering, from the memory tier.
        assert cache.get_or_set("k", lambda: 1, ttl=60) == 1
        assert cache.fallbacks >= 1
        cache.close()

        without_certificate = run_one(redis_check(server.url(client_certificate=False), timeout=2))
        assert without_certificate.status == "fail"


# -- Sentinel ------------------------------------------------------------------------


def test_sentinel_failover_mid_load_keeps_cached_calls_answering() -> None:
    with sentinel_group(down_after_ms=500, failover_timeout_ms=2000) as group:
        assert run_one(redis_check(group.url, timeout=2)).status == "pass"
        cache = RedisCache(
            group.url,
            prefix="bk-failover:",
            timeout=0.3,
            probe_interval=0.2,
            warn_interval=1,
            lock_ttl=4.0,
        )
        keys = range(20)
        loads: list[tuple[float, int]] = []
        loads_lock = threading.Lock()

        @cached(ttl=300, cache=cache)
        def price(item: int) -> int:
            with loads_lock:
                loads.append((time.monotonic(), item))
            time.sleep(0.01)
            return item * 10

        assert [price(item) for item in keys] == [item * 10 for item in keys]
        assert len(loads) == len(keys)
        master = redis.Redis(port=group.master.port, socket_timeout=5)
        # Another process's load was running when the master died: its lock reached
        # the replica, its value never will.
        held_lock = cache._lock_key(cache._key("default", "held-at-failover"))
        master.set(held_lock, "a holder on the old master", px=4000)
        lock_taken_at = time.monotonic()
        assert master.execute_command("WAIT", 1, 5000) == 1  # the replica has every value
        master.close()

        with CallsUnderLoad(price, keys) as load:
            time.sleep(0.5)
            killed_at = time.monotonic()
            group.master.kill()
            promoted_at = recovered_at = None
            deadline = killed_at + 30
            while time.monotonic() < deadline and recovered_at is None:
                if promoted_at is None and group.master_port() == group.replica.port:
                    promoted_at = time.monotonic()
                if promoted_at is not None and not cache.breaker.failing:
                    recovered_at = time.monotonic()
                time.sleep(0.02)
            time.sleep(1.0)  # calls keep going against the new master
        assert promoted_at is not None, "Sentinel did not promote the replica within 30 s"
        assert recovered_at is not None, "the cache did not find the new master within 30 s"
        during = [item for at, item in loads if killed_at <= at <= recovered_at]
        after = [item for at, item in loads if at > recovered_at]
        print(
            f"\nsentinel failover: promoted after {promoted_at - killed_at:.2f} s, "
            f"cache back on Redis after {recovered_at - killed_at:.2f} s, "
            f"{load.answered} cached calls, {len(load.errors)} errors, "
            f"{len(during)} loads during the switch ({len(set(during))} keys), "
            f"{len(after)} after, {cache.fallbacks} fallbacks"
        )
        assert load.errors == []
        assert load.answered > 0
        assert cache.fallbacks > 0  # the memory tier answered during the switch
        # Each key is loaded at most a few times per process while the master is away
        # (the memory tier is dropped when Redis answers again); never once per call.
        assert len(during) <= 3 * len(keys)
        # The same client now talks to the promoted replica: a value written through the
        # cache lands there, without any restart.
        cache.set("after-failover", "on the new master", ttl=60)
        promoted = redis.Redis(port=group.replica.port, socket_timeout=5)
        assert promoted.exists(cache._key("default", "after-failover")) == 1
        promoted.close()
        # The lock taken on the old master holds the key back for at most lock_ttl after
        # it was taken; then this process loads it, once.
        held_loads: list[float] = []
        value = cache.get_or_set(
            "held-at-failover", lambda: held_loads.append(time.monotonic()) or "loaded", ttl=60
        )
        assert (value, len(held_loads)) == ("loaded", 1)
        held_for = held_loads[0] - lock_taken_at
        print(f"a lock from the old master held its key back for {held_for:.2f} s")
        assert held_for < 4.0 + 3.0
        assert cache.get_or_set("held-at-failover", lambda: "again", ttl=60) == "loaded"
        assert run_one(redis_check(group.url, timeout=2)).status == "pass"
        cache.close()


# -- Cluster -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with redis_cluster() as made:
        yield made


_WORKER = textwrap.dedent(
    """
    import sys, threading, time, random
    from backend_kit import RedisCache
    url, prefix, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
    cache = RedisCache(url, prefix=prefix, timeout=2)
    cache.client  # connected before the release
    results = []

    def load(key):
        cache.client.incr(prefix + "loads:" + key)
        time.sleep(0.05)
        return key.upper()

    def run(seed):
        keys = [f"key-{number}" for number in range(24)]
        random.Random(seed).shuffle(keys)
        for key in keys:
            results.append(cache.get_or_set(key, lambda key=key: load(key), ttl=60))

    time.sleep(max(0.0, start - time.time()))
    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    print(len(results), cache.fallbacks, len(set(results)))
    """
)


def test_single_flight_across_processes_on_keys_spread_over_the_cluster(cluster: Cluster) -> None:
    prefix = "bk-flight:"  # fixed: the slots the keys land on are the same on every run
    cache = RedisCache(cluster.url, prefix=prefix)
    client = cache.client
    assert isinstance(client, RedisCluster)
    # The cluster client too has no retries of its own, and the cache's timeouts.
    assert client.retry.get_retries() == 0
    node_kwargs = client.get_default_node().redis_connection.connection_pool.connection_kwargs  # type: ignore[union-attr]
    assert node_kwargs["socket_timeout"] == node_kwargs["socket_connect_timeout"] == 0.5
    keys = [f"key-{number}" for number in range(24)]
    slots = {client.keyslot(cache._key("default", key)) for key in keys}
    owners = {client.nodes_manager.get_node_from_slot(slot).port for slot in slots}
    assert owners == {node.port for node in cluster.nodes}  # every master holds some

    start = time.time() + 2.0
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, cluster.url, prefix, str(start)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=60)[0].split() for process in processes]
    assert all(process.returncode == 0 for process in processes)
    # Every process: 4 threads x 24 keys answered, none from the memory tier.
    assert outputs == [["96", "0", "24"]] * 4
    counts = [int(client.get(prefix + "loads:" + key) or 0) for key in keys]
    assert counts == [1] * len(keys)  # one load per key across 4 processes x 4 threads
    assert cache.get("key-7") == "KEY-7"
    cache.clear()
    assert client.keys(prefix + "*", target_nodes=RedisCluster.PRIMARIES) == []
    cache.close()


def test_namespace_invalidation_across_slots(cluster: Cluster) -> None:
    cache = RedisCache(cluster.url, prefix=f"bk-ns-{uuid.uuid4().hex[:8]}:")
    client = cache.client
    assert isinstance(client, RedisCluster)
    for number in range(40):
        cache.set(f"item-{number}", number, ttl=60, namespace="prices")
        cache.set(f"item-{number}", number, ttl=60, namespace="stock")
    slots = {client.keyslot(cache._key("prices", f"item-{number}")) for number in range(40)}
    assert len(slots) == 16  # the namespace spreads over its 16 slots

    def load_then_get_invalidated() -> str:
        cache.invalidate_namespace("prices")
        return "outdated"

    assert cache.get_or_set("late", load_then_get_invalidated, ttl=60, namespace="prices")
    assert [cache.get(f"item-{n}", namespace="prices") for n in range(40)] == [None] * 40
    assert [cache.get(f"item-{n}", namespace="stock") for n in range(40)] == list(range(40))
    # The load that ran across the invalidation did not store its value.
    assert cache.get("late", namespace="prices") is None
    # Every slice of the namespace got a version of its own, each with its expiry.
    versions = client.mget_nonatomic(cache._version_keys("prices"))
    assert all(version is not None for version in versions)
    assert len(set(versions)) == 16
    assert all(client.pttl(key) > 0 for key in cache._version_keys("prices"))
    assert cache.fallbacks == 0
    cache.clear()
    cache.close()


def test_async_calls_and_a_forked_child_on_the_cluster(cluster: Cluster) -> None:
    cache = RedisCache(cluster.url, prefix=f"bk-async-{uuid.uuid4().hex[:8]}:")
    loads: list[int] = []

    @cached(ttl=60, cache=cache)
    async def double(number: int) -> int:
        loads.append(number)
        return number * 2

    async def burst() -> list[int]:
        return list(await asyncio.gather(*(double(n % 5) for n in range(20))))

    assert asyncio.run(burst()) == [n % 5 * 2 for n in range(20)]
    assert sorted(loads) == [0, 1, 2, 3, 4]
    cache._reset_after_fork()  # what a forked child runs: a fresh client, same data
    assert cache.get_or_set("x", lambda: "loaded", ttl=60) == "loaded"
    assert asyncio.run(burst()) == [n % 5 * 2 for n in range(20)]
    assert sorted(loads) == [0, 1, 2, 3, 4]
    assert cache.fallbacks == 0
    cache.clear()
    cache.close()


_BREAKER_WORKER = textwrap.dedent(
    """
    import json, sys
    import backend_kit
    from backend_kit import CircuitOpenError
    name, url, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    breaker = backend_kit.circuit_breaker(
        name, failures=3, failure_ratio=0.9, recovery_timeout=1.0, redis_url=url,
        sync_interval=0.05,
    )
    outcomes = []
    for _ in range(5):
        try:
            with breaker:
                if mode == "fail":
                    raise ConnectionError("dependency down")
            outcomes.append("ok")
        except ConnectionError:
            outcomes.append("failed")
        except CircuitOpenError:
            outcomes.append("open")
    print(json.dumps({"outcomes": outcomes, "state": breaker.state}))
    """
)


def _breaker_in_another_process(name: str, url: str, mode: str) -> dict[str, object]:
    finished = subprocess.run(
        [sys.executable, "-c", _BREAKER_WORKER, name, url, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # The last line: the transitions are logged to stdout before it.
    report: dict[str, object] = json.loads(finished.stdout.splitlines()[-1])
    return report


def test_a_circuit_breaker_shared_on_the_cluster(cluster: Cluster) -> None:
    # The breaker swallows Redis errors (calls go through while its state is out of
    # reach), so a script refused by the cluster (CROSSSLOT, a key on another node)
    # would show here as a circuit that never opens.
    name = f"bk-cluster-{uuid.uuid4().hex[:8]}"

    def breaker() -> CircuitBreaker:
        # Each instance has a client of its own.
        return circuit_breaker(
            name,
            failures=3,
            failure_ratio=0.9,  # the failure window is a second key of the scripts
            recovery_timeout=1.0,
            redis_url=cluster.url,
            sync_interval=0.05,
        )

    here, also_here = breaker(), breaker()
    client = RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port, socket_timeout=2)
    state_key = f"backend_kit:circuit:{{{name}}}:state"
    window_key = f"backend_kit:circuit:{{{name}}}:window"
    try:
        with here:
            pass  # counted in the failure window
        assert client.keyslot(state_key) == client.keyslot(window_key)
        assert client.exists(window_key) == 1
        # Another process's failures open the circuit ...
        other = _breaker_in_another_process(name, cluster.url, "fail")
        assert other == {"outcomes": ["failed"] * 3 + ["open"] * 2, "state": "open"}
        assert client.hget(state_key, "state") == b"open"
        # ... for both instances here: they fail fast without calling.
        time.sleep(0.1)
        called: list[str] = []
        for instance in (here, also_here):
            with pytest.raises(CircuitOpenError), instance:
                called.append("called")
        assert called == []
        # Half-open: one probe at a time across the instances; a failed probe opens
        # the circuit again for everyone.
        time.sleep(1.1)
        here.allow()
        with pytest.raises(CircuitOpenError):
            also_here.allow()
        here.record(False)
        time.sleep(0.1)
        with pytest.raises(CircuitOpenError):
            also_here.allow()
        # The next probe succeeds: closed for this process and the other one.
        time.sleep(1.1)
        with also_here:
            called.append("probe")
        assert called == ["probe"]
        time.sleep(0.1)
        assert (here.state, also_here.state) == ("closed", "closed")
        again = _breaker_in_another_process(name, cluster.url, "ok")
        assert again == {"outcomes": ["ok"] * 5, "state": "closed"}
        # The state lives on the node that owns its slot; the others redirect.
        holders = []
        for node in cluster.nodes:
            with redis.Redis(port=node.port, socket_timeout=2) as node_client:
                try:
                    if node_client.exists(state_key):
                        holders.append(node.port)
                except redis.exceptions.MovedError:
                    pass
        owner = client.nodes_manager.get_node_from_slot(client.keyslot(state_key))
        assert holders == [owner.port]
    finally:
        here.reset()
    assert client.exists(state_key, window_key) == 0  # reset() deletes both
    client.close()


def test_every_script_touches_only_the_keys_it_declares() -> None:
    # Redis Cluster routes a script by its declared keys: a key named any other way
    # (built inside the script, or passed in ARGV) may live on another node.
    from backend_kit import _breaker
    from backend_kit._cache import _redis as cache_redis

    scripts = {
        "breaker allow": _breaker._ALLOW_SCRIPT,
        "breaker record": _breaker._RECORD_SCRIPT,
        "cache release": cache_redis._RELEASE,
        "cache set if version": cache_redis._SET_IF_VERSION,
    }
    for label, script in scripts.items():
        calls = re.findall(r"redis\.call\('(\w+)'(?:, ([^,)]+))?", script)
        assert calls, label
        for command, first_argument in calls:
            if command == "TIME":
                continue
            assert re.fullmatch(r"KEYS\[\d\]", first_argument), (label, command, first_argument)


def test_cluster_failover_keeps_cached_calls_answering() -> None:
    with redis_cluster(replicas=True) as made:
        cache = RedisCache(made.url, prefix="bk-cluster-failover:", timeout=0.3, probe_interval=0.2)
        keys = range(24)
        loads: list[tuple[float, int]] = []
        loads_lock = threading.Lock()

        @cached(ttl=300, cache=cache)
        def price(item: int) -> int:
            with loads_lock:
                loads.append((time.monotonic(), item))
            time.sleep(0.01)
            return item * 10

        assert [price(item) for item in keys] == [item * 10 for item in keys]
        client = cache.client
        assert isinstance(client, RedisCluster)
        victim, heir = made.nodes[0], made.replicas[0]

        def owner(key: str) -> int:
            slot = client.keyslot(cache._key("default", key))
            return int(client.nodes_manager.get_node_from_slot(slot).port)

        on_victim = [
            item for item in keys if owner(f"{function_name(price)}:[{item}]") == victim.port
        ]
        assert on_victim  # some of the keys live on the master that is killed
        with redis.Redis(port=victim.port, socket_timeout=5) as master:
            assert master.execute_command("WAIT", 1, 5000) == 1  # the replica has them

        with CallsUnderLoad(price, keys) as load:
            time.sleep(0.5)
            killed_at = time.monotonic()
            victim.kill()
            promoted_at = None
            deadline = killed_at + 30
            while time.monotonic() < deadline and promoted_at is None:
                if made.role_of(heir) == "master":
                    promoted_at = time.monotonic()
                time.sleep(0.02)
            assert promoted_at is not None, "the cluster did not promote the replica in 30 s"
            # Back on Redis: a key of the lost master, deleted and loaded again through
            # the cache, is gone from then back on the promoted replica (which had
            # every value before the kill).
            back_at = None
            probe_key = f"{function_name(price)}:[{on_victim[0]}]"
            full_key = cache._key("default", probe_key)
            with redis.Redis(port=heir.port, socket_timeout=2) as promoted:
                while time.monotonic() < deadline and back_at is None:
                    cache.delete(probe_key)
                    if promoted.exists(full_key) == 0:
                        assert price(on_victim[0]) == on_victim[0] * 10
                        if promoted.exists(full_key) == 1:
                            back_at = time.monotonic()
                    time.sleep(0.05)
            assert back_at is not None, "the cache did not reach the promoted replica in 30 s"
            time.sleep(1.0)  # calls keep going against the new layout
            settled_at = time.monotonic()
            time.sleep(1.0)
        during = [item for at, item in loads if killed_at <= at <= back_at]
        settled = [item for at, item in loads if at > settled_at]
        print(
            f"\ncluster failover: replica promoted after {promoted_at - killed_at:.2f} s, "
            f"cache on the promoted replica after {back_at - killed_at:.2f} s, "
            f"{load.answered} cached calls, {len(load.errors)} errors, {len(during)} loads during "
            f"the switch ({len(set(during))} keys), {len(settled)} once settled, "
            f"{cache.fallbacks} fallbacks"
        )
        assert load.errors == []
        assert load.answered > 0
        assert cache.fallbacks > 0  # the memory tier answered during the switch
        # Loads are bounded by the switches between Redis and the memory tier (each
        # drops the tier), never one per call.
        assert len(during) < load.answered / 10
        assert settled == []  # every key is back in Redis
        cache.close()


def test_health_checks_ping_every_primary_of_the_cluster(cluster: Cluster) -> None:
    # Last in this module: it stops one master of the shared cluster.
    settings = load_settings(cache_url=cluster.url, cache_timeout=0.5)
    runner = HealthRunner(checks_from_settings(settings), settings=settings, cache_seconds=0)
    assert runner.ready().status == "pass"
    assert run_one(redis_check(cluster.url, timeout=2)).status == "pass"
    cache = RedisCache(cluster.url, prefix="bk-down:", timeout=0.3)
    assert [cache.get_or_set(f"k{n}", lambda n=n: n, ttl=60) for n in range(24)] == list(range(24))
    cluster.nodes[-1].kill()
    result = run_one(redis_check(cluster.url, timeout=1))
    assert result.status == "fail"
    report = runner.ready()
    assert report.status == "fail"
    # Cached calls keep answering, while the other nodes see the master fail and the
    # cluster stops serving (no replicas): from Redis or from the memory tier.
    deadline = time.monotonic() + 4
    answers = 0
    while time.monotonic() < deadline:
        for n in range(24):
            assert cache.get_or_set(f"k{n}", lambda n=n: n, ttl=60) == n
            answers += 1
    assert answers >= 24
    assert cache.fallbacks > 0
    cache.close()
