"""Throwaway Redis deployments on 127.0.0.1: a TLS-only server with certificates made
for it, a master with a replica watched by three Sentinels, and a three-master Cluster.

Each starts its own ``redis-server`` processes on free ports in a temporary directory
and stops them afterwards. Under ``CI=true`` a missing binary fails the test instead
of skipping it. Also imported by benchmarks/bench_redis_deployments.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .servers import free_port, wait_for_port

__all__ = [
    "Certificates",
    "RedisProcess",
    "SentinelGroup",
    "make_certificates",
    "redis_cluster",
    "redis_process",
    "sentinel_group",
    "tls_redis_server",
]

SERVICE = "bkmaster"


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed; it is needed to start a throwaway Redis deployment"
        if os.environ.get("CI", "").lower() == "true":
            raise RuntimeError(message)
        import pytest

        pytest.skip(message)
    return path


class RedisProcess:
    """One ``redis-server`` (or Sentinel) process on *port*."""

    def __init__(self, port: int, args: Sequence[str], workdir: Path) -> None:
        self.port = port
        self._args = list(args)
        self._workdir = workdir
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self._workdir / f"redis-{self.port}.log").open("ab")
        with log:
            self._process = subprocess.Popen(
                [_binary("redis-server"), *self._args],
                cwd=self._workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"redis-server did not start:\n{self.log()}") from None

    def kill(self) -> None:
        """Kill at once, as a crash would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None

    def log(self) -> str:
        path = self._workdir / f"redis-{self.port}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _plain_server(port: int, workdir: Path, *extra: str) -> RedisProcess:
    args = ["--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    return RedisProcess(port, [*args, "--dir", str(workdir), *extra], workdir)


@contextmanager
def redis_process(*extra: str) -> Iterator[RedisProcess]:
    """One plain redis-server on a free port, with *extra* options."""
    with tempfile.TemporaryDirectory(prefix="bk-redis-") as workdir:
        process = _plain_server(free_port(), Path(workdir), *extra)
        process.start()
        try:
            yield process
        finally:
            process.kill()


# -- TLS ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """PEM files: a CA, a server certificate for 127.0.0.1 signed by it, a client
    certificate signed by it, and another CA that signed none of them."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        [_binary("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def _make_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.crt",
        # Python 3.13 verifies with VERIFY_X509_STRICT: a CA must say what its key is for.
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


# What strict verification (Python 3.13's default) asks of a certificate a CA signed.
_LEAF_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "subjectKeyIdentifier=hash\n"
    "authorityKeyIdentifier=keyid,issuer\n"
)


def _make_signed(directory: Path, name: str, ca: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(_LEAF_EXTENSIONS + extensions)
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
        "-keyout", f"{name}.key", "-out", f"{name}.csr",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


def make_certificates(directory: Path) -> Certificates:
    """Create a private CA and certificates signed by it in *directory*."""
    _make_ca(directory, "test-ca")
    _make_ca(directory, "other-ca")
    _make_signed(
        directory,
        "server",
        "test-ca",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    _make_signed(directory, "client", "test-ca", "extendedKeyUsage=clientAuth\n")
    return Certificates(
        ca=directory / "test-ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.crt",
    )


@dataclass
class TLSServer:
    port: int
    certificates: Certificates
    process: RedisProcess

    def url(self, *, client_certificate: bool = True, ca: Path | None = None) -> str:
        """A ``rediss://`` URL with the TLS options in its query string."""
        query = f"ssl_ca_certs={ca or self.certificates.ca}"
        if client_certificate:
            query += (
                f"&ssl_certfile={self.certificates.client_cert}"
                f"&ssl_keyfile={self.certificates.client_key}"
            )
        return f"rediss://127.0.0.1:{self.port}/0?{query}"


@contextmanager
def tls_redis_server() -> Iterator[TLSServer]:
    """A Redis that speaks TLS only and requires a client certificate."""
    with tempfile.TemporaryDirectory(prefix="bk-redis-tls-") as workdir:
        directory = Path(workdir)
        certificates = make_certificates(directory)
        port = free_port()
        process = RedisProcess(
            port,
            [
                "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
                "--tls-cert-file", str(certificates.server_cert),
                "--tls-key-file", str(certificates.server_key),
                "--tls-ca-cert-file", str(certificates.ca),
                "--tls-auth-clients", "yes",
                "--save", "", "--appendonly", "no", "--dir", workdir,
            ],
            directory,
        )  # fmt: skip
        process.start()
        try:
            yield TLSServer(port, certificates, process)
        finally:
            process.kill()


# -- Sentinel ----------------------------------------------------------------------


@dataclass
class SentinelGroup:
    master: RedisProcess
    replica: RedisProcess
    sentinels: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self) -> int | None:
        """The master's port as the first Sentinel that answers names it now."""
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port, socket_timeout=0.5, socket_connect_timeout=0.5)
            try:
                address = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError:
                continue
            finally:
                client.close()
            if address:
                return int(address[1])
        return None


def _wait(condition: str, check: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {condition}")
        time.sleep(0.05)


@contextmanager
def sentinel_group(
    *, down_after_ms: int = 500, failover_timeout_ms: int = 2000
) -> Iterator[SentinelGroup]:
    """A master, one replica of it, and three Sentinels (quorum 2) watching it, all on
    free loopback ports; returns once the replica is in sync and every Sentinel
    knows the other two."""
    with tempfile.TemporaryDirectory(prefix="bk-sentinel-") as workdir, ExitStack() as stack:
        directory = Path(workdir)
        master_port, replica_port = free_port(), free_port()
        master = _plain_server(master_port, directory)
        replica = _plain_server(
            replica_port, directory, "--replicaof", "127.0.0.1", str(master_port)
        )
        group = SentinelGroup(master, replica)
        for process in (master, replica):
            process.start()
            stack.callback(process.kill)
        for number in range(3):
            port = free_port()
            config = directory / f"sentinel-{number}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            sentinel = RedisProcess(port, [str(config), "--sentinel"], directory)
            sentinel.start()
            stack.callback(sentinel.kill)
            group.sentinels.append(sentinel)

        replica_client = redis.Redis(port=replica_port, socket_timeout=1)
        _wait(
            "the replica to sync",
            lambda: replica_client.info("replication").get("master_link_status") == "up",
            20,
        )
        replica_client.close()

        def all_sentinels_know_each_other() -> bool:
            for sentinel in group.sentinels:
                client = redis.Redis(port=sentinel.port, socket_timeout=1)
                try:
                    state = client.sentinel_master(SERVICE)
                finally:
                    client.close()
                if (
                    int(state.get("num-other-sentinels", 0)) < 2
                    or int(state.get("num-slaves", 0)) < 1
                ):
                    return False
            return True

        _wait("the Sentinels to find each other and the replica", all_sentinels_know_each_other, 30)
        yield group


# -- Cluster -----------------------------------------------------------------------


@dataclass
class Cluster:
    nodes: list[RedisProcess]
    #: With replicas, the replica of each master (the same order), as the cluster
    #: paired them when it was created.
    replicas: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def role_of(self, node: RedisProcess) -> str | None:
        """``"master"`` or ``"slave"`` as *node* reports itself now (None if it is down)."""
        client = redis.Redis(port=node.port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return str(client.info("replication")["role"])
        except redis.RedisError:
            return None
        finally:
            client.close()


def _cluster_ok(nodes: Sequence[RedisProcess]) -> bool:
    for node in nodes:
        client = redis.Redis(port=node.port, socket_timeout=1)
        try:
            if client.cluster("info").get("cluster_state") != "ok":
                return False
        finally:
            client.close()
    return True


@contextmanager
def redis_cluster(masters: int = 3, *, replicas: bool = False) -> Iterator[Cluster]:
    """A Redis Cluster of *masters* primaries, each with one replica if *replicas*,
    made with ``redis-cli --cluster create``; returns once every node reports the
    cluster ok (and, with replicas, every replica is in sync)."""
    with tempfile.TemporaryDirectory(prefix="bk-cluster-") as workdir, ExitStack() as stack:
        directory = Path(workdir)
        nodes = []
        for _ in range(masters * (2 if replicas else 1)):
            port = free_port()
            node = _plain_server(
                port,
                directory,
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-port", str(free_port()),
                "--cluster-node-timeout", "2000",
            )  # fmt: skip
            node.start()
            stack.callback(node.kill)
            nodes.append(node)
        primaries, secondaries = nodes[:masters], nodes[masters:]
        subprocess.run(
            [
                _binary("redis-cli"), "--cluster", "create",
                *(f"127.0.0.1:{node.port}" for node in primaries),
                "--cluster-replicas", "0", "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        _wait("the cluster to be ok on every node", lambda: _cluster_ok(primaries), 30)
        for primary, secondary in zip(primaries, secondaries, strict=False):
            # Each replica is paired with its master explicitly, so a test knows which
            # one takes over.
            with redis.Redis(port=primary.port, socket_timeout=2) as client:
                master_id = client.execute_command("CLUSTER", "MYID").decode()
            subprocess.run(
                [
                    _binary("redis-cli"), "--cluster", "add-node",
                    f"127.0.0.1:{secondary.port}", f"127.0.0.1:{primary.port}",
                    "--cluster-slave", "--cluster-master-id", master_id,
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )  # fmt: skip
        if secondaries:

            def replicas_in_sync() -> bool:
                for secondary in secondaries:
                    client = redis.Redis(port=secondary.port, socket_timeout=1)
                    try:
                        info = client.info("replication")
                    finally:
                        client.close()
                    if info["role"] != "slave" or info.get("master_link_status") != "up":
                        return False
                return _cluster_ok(nodes)

            _wait("every replica to be in sync", replicas_in_sync, 30)
        yield Cluster(primaries, secondaries)
