"""The whole cluster, up and down: the network, the data host, the app hosts, the balancer.

``Cluster.up()`` removes what an earlier run left (namespaces named ``enrc-*``, their processes,
the state directory), then builds everything; if any step fails, what was built is torn down
before the error goes on. ``down()`` kills every process in the cluster's namespaces (the
app hosts' and HAProxy's process groups first, PostgreSQL stopped at once) and removes the
namespaces, the bridge and the state directory: it works from a fresh process too (the CLI's
``down``), because it finds everything by name.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster import netns
from tests.cluster.apps import AppHost, Balancer
from tests.cluster.data import DATABASE, NetnsRedisCluster, data_host, start_postgres
from tests.cluster.netns import NETWORK, Host
from tests.fixtures.pg_replica import ReplicatedPostgres
from tests.fixtures.service import (
    RELAXED_DB_POOL_TIMEOUT_SECONDS,
    RELAXED_DEADLINE_MS,
    RELAXED_STATEMENT_TIMEOUT_MS,
    service_env,
)

STATE = Path("/tmp/enrich-netns-cluster")  # root's scratch, removed by down
APP_HOSTS = 2


def hosts() -> tuple[Host, Host, list[Host]]:
    """The data host, the balancer's, and the app hosts (10.77.0.11, .12, ...)."""
    apps = [Host(f"app{n}", f"{NETWORK}.{10 + n}") for n in range(1, APP_HOSTS + 1)]
    return data_host(), Host("lb", f"{NETWORK}.3"), apps


@dataclass
class Cluster:
    directory: Path = STATE
    data: Host = field(default_factory=lambda: hosts()[0])
    lb: Host = field(default_factory=lambda: hosts()[1])
    app_hosts: list[Host] = field(default_factory=lambda: hosts()[2])
    redis: NetnsRedisCluster | None = None
    postgres: ReplicatedPostgres | None = None
    apps: list[AppHost] = field(default_factory=list)
    balancer: Balancer | None = None

    @property
    def database_url(self) -> str:
        assert self.postgres is not None
        return self.postgres.primary.url(DATABASE)

    @property
    def replica_url(self) -> str:
        assert self.postgres is not None
        return self.postgres.replica.url(DATABASE)

    def app_env(self) -> dict[str, str]:
        """What every app host runs with: the same primary, replica, Redis Cluster and
        public URL (the balancer's: a token from one host is good on every other)."""
        assert self.redis is not None
        assert self.balancer is not None
        return service_env(
            {
                "ENRICH_DATABASE_URL": self.database_url,
                "ENRICH_DATABASE_REPLICA_URLS": self.replica_url,
                **{f"ENRICH_{k.upper()}": v for k, v in self.redis.settings().items()},
                "ENRICH_PUBLIC_URL": self.balancer.base_url,
                "PYTHONFAULTHANDLER": "1",  # a stack dump on SIGABRT: see AppHost.wait_exit
                # relaxed as in every test about something else than the deadline
                "ENRICH_DEADLINE_MS": str(RELAXED_DEADLINE_MS),
                "ENRICH_DB_POOL_TIMEOUT": str(RELAXED_DB_POOL_TIMEOUT_SECONDS),
                "ENRICH_DB_STATEMENT_TIMEOUT_MS": str(RELAXED_STATEMENT_TIMEOUT_MS),
            }
        )

    def up(self) -> None:
        down(self.directory)
        try:
            self.directory.mkdir(parents=True)
            netns.create([self.data, self.lb, *self.app_hosts])
            self.redis = NetnsRedisCluster(self.data, self.directory / "redis")
            self.redis.start()
            self.postgres = start_postgres(self.data, self.directory)
            self.balancer = Balancer(self.lb, [], self.directory)
            env = self.app_env()
            self.apps = [AppHost(host, env, self.directory) for host in self.app_hosts]
            self.balancer.apps = self.apps
            for app in self.apps:
                app.start()
            for app in self.apps:
                app.wait_ready()
            self.balancer.start()
            self.balancer.wait_states(dict.fromkeys((app.name for app in self.apps), "UP"))
        except BaseException:
            self.down()
            raise

    def app(self, name: str) -> AppHost:
        return next(app for app in self.apps if app.name == name)

    def down(self) -> None:
        """Stop what this object started (in order), then remove everything by name."""
        try:
            for stop in (
                *(app.stop for app in self.apps),
                *((self.balancer.stop,) if self.balancer else ()),
                *((self.postgres.close,) if self.postgres else ()),
                *((self.redis.close,) if self.redis else ()),
            ):
                with contextlib.suppress(Exception):
                    stop()
        finally:
            down(self.directory)


def down(directory: Path = STATE) -> None:
    """Remove every trace of a cluster, this run's or an earlier one's."""
    netns.remove_all()
    shutil.rmtree(directory, ignore_errors=True)
