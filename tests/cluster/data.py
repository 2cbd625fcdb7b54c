"""The data host: a Redis Cluster (three masters, a replica each) and a PostgreSQL primary with
a streaming replica, all in the ``data`` namespace on fixed ports.

One namespace for them all: the app hosts reach them over the bridge as they would a database
host on a real network, the namespace has a port space of its own (fixed, documented ports:
no search for spare ones, and nothing can collide with the machine's PostgreSQL on 5432 or
Redis on 6379, which are never touched), and tearing down the namespace ends every server in
it. The servers are the test fixtures' (``RedisClusterServers``, ``PrivatePostgres``,
``ReplicatedPostgres``), bound to the data host's address instead of 127.0.0.1.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from tests.cluster.netns import NETWORK, Host
from tests.fixtures.pg_replica import ReplicatedPostgres
from tests.fixtures.redis_cluster import RedisClusterServers
from tests.fixtures.servers import PrivatePostgres, pg_bin

REDIS_PORTS = [7000, 7001, 7002, 7003, 7004, 7005]
PRIMARY_PORT = 5432
REPLICA_PORT = 5433
DATABASE = "enrich"


class NetnsRedisCluster(RedisClusterServers):
    """The fixtures' Redis Cluster, its nodes in ``host``'s namespace on its address."""

    def __init__(self, host: Host, directory: Path) -> None:
        self.host = host
        self.dir = directory
        self.ports = list(REDIS_PORTS)
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.group: int | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host.address}:{self.ports[0]}/0"

    @property
    def seeds(self) -> str:
        return ",".join(f"{self.host.address}:{port}" for port in self.ports[1:])

    def start_node(self, port: int) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server not found"
        node_dir = self.dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        flags = [
            *("--port", str(port), "--bind", self.host.address, "--daemonize", "no"),
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", "1000", "--appendonly", "no", "--save", ""),
            *("--repl-diskless-sync-delay", "0", "--protected-mode", "no"),
            *("--dir", str(node_dir)),
        ]
        with (node_dir / "redis.log").open("ab") as log:
            self.processes[port] = subprocess.Popen(
                self.host.command(binary, *flags),
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0 if self.group is None else self.group,
            )
        if self.group is None:
            self.group = self.processes[port].pid

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host=self.host.address, port=port, socket_timeout=2, socket_connect_timeout=2
        )

    def start(self) -> None:
        for port in self.ports:
            self.start_node(port)
        self._wait(lambda: all(self.answers(p) for p in self.ports), "the nodes answer")
        nodes = [f"{self.host.address}:{port}" for port in self.ports]
        create = ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "1"]
        result = subprocess.run(
            [*create, "--cluster-yes"], capture_output=True, timeout=120, check=False
        )
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        self.wait_ok()


class NetnsPostgres(PrivatePostgres):
    """The fixtures' private PostgreSQL, run in ``host``'s namespace on its address and a
    fixed port, its files under ``root``; trusts the cluster's network (replication too)."""

    def __init__(self, host: Host, root: Path, port: int) -> None:
        self.host = host
        self.bin = pg_bin()
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = port
        self.running = False
        self._as_root = True
        root.mkdir(parents=True)
        shutil.chown(root, "postgres", "postgres")

    def _pg(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = self.host.command("runuser", "-u", "postgres", "--", str(self.bin / tool), *args)
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise AssertionError(
                f"{tool} {' '.join(args)} failed ({result.returncode}):\n"
                + (result.stdout + result.stderr).decode(errors="replace")
            )

    def init(self) -> None:
        super().init()
        with (self.data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {NETWORK}.0/24 trust\n")
            hba.write(f"host replication all {NETWORK}.0/24 trust\n")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={self.host.address} -k {self.root} "
            "-c fsync=off -c max_connections=300 -c hot_standby_feedback=on"
        )
        self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")
        self.running = True

    def url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres@{self.host.address}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> None:
        flags = f"-X -q -v ON_ERROR_STOP=1 -h {self.host.address} -p {self.port} -U postgres"
        command = [str(self.bin / "psql"), *flags.split(), "-d", database, "-c", sql]
        result = subprocess.run(command, capture_output=True, timeout=60, check=False)
        assert result.returncode == 0, (result.stdout + result.stderr).decode(errors="replace")

    def close(self) -> None:
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(host: Host, directory: Path) -> ReplicatedPostgres:
    """The primary (migrated ``enrich`` database) and its replica, a ``pg_basebackup -R`` of it
    started as a hot standby."""
    primary = NetnsPostgres(host, directory / "pg-primary", PRIMARY_PORT)
    replica = NetnsPostgres(host, directory / "pg-replica", REPLICA_PORT)
    try:
        primary.init()
        primary.start()
        primary.prepare_template()
        primary.psql(f'CREATE DATABASE "{DATABASE}" TEMPLATE enrich_template')
        source = f"-h {host.address} -p {PRIMARY_PORT} -U postgres -R -X stream -c fast"
        replica._pg("pg_basebackup", *source.split(), "-D", str(replica.data))
        replica.start()
    except BaseException:
        replica.close()
        primary.close()
        raise
    return ReplicatedPostgres(primary, replica)


def data_host() -> Host:
    return Host("data", f"{NETWORK}.2")
