"""The namespace cluster's longer drills, not part of ``make test`` (pytest collects only
``test_*.py``): a rolling restart of every app host, a Redis master killed, the PostgreSQL
replica stopped and lagging, each under load through the balancer. Run them by name:

    .venv/bin/pytest -rP tests/cluster/long_drills.py

Each prints its figures; what they showed is in docs/deployment.md ("Many hosts").
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from redis.crc import key_slot

from app.core.settings import Settings
from app.enrich.cache.remote import invalidation_channel
from tests.cluster import netns
from tests.cluster.harness import Cluster
from tests.cluster.load import Load, running
from tests.cluster.test_drills import LOAD_RATE, guests, readmit
from tests.fixtures.polling import eventually
from tests.fixtures.service import RecordProperty, Summary

SETTLE = int(LOAD_RATE * 3)  # requests after a change before the next one
LAG_SECONDS = 15.0


async def lost_writes(cluster: Cluster, load: Load) -> list[str]:
    """Guests whose tier in PostgreSQL (the truth) is below the last write answered 200."""
    url = cluster.database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(url, timeout=10)
    try:
        rows = await connection.fetch(
            "SELECT i.value, (p.traits->>'tier')::int AS tier FROM identifiers i"
            " JOIN profiles p ON p.id = i.profile_id WHERE i.type = 'crm_id' AND i.value = ANY($1)",
            load.guests,
        )
    finally:
        await connection.close()
    stored = {row["value"]: row["tier"] for row in rows}
    return [g for g in load.guests if stored.get(g, -1) < load.acked[g]]


async def hosts_up(cluster: Cluster, seen: list[int]) -> None:
    """Record how many app hosts the balancer has up, every 50 ms, until cancelled."""
    assert cluster.balancer is not None
    while True:
        states = await asyncio.to_thread(cluster.balancer.states)
        seen.append(sum(state.startswith("UP") for state in states.values()))
        await asyncio.sleep(0.05)


class TestARollingRestart:
    async def test_every_app_host_in_turn_fails_no_request(
        self, cluster: Cluster, cluster_headers: dict[str, str], record_property: RecordProperty
    ) -> None:
        """SIGTERM to each host in turn (its workers answer 503 at /readyz for the drain, then
        stop), started again once stopped, the next one once the balancer takes it back."""
        assert cluster.balancer is not None
        balancer = cluster.balancer
        load = Load(balancer.base_url, cluster_headers, guests("rolling"), rate=LOAD_RATE)
        drained: list[float] = []
        restarted: list[float] = []
        async with running(load):
            for app in cluster.apps:
                app.terminate()
                drained.append(
                    await eventually(
                        lambda app=app: balancer.states().get(app.name) == "DOWN",
                        "drained",
                        deadline=60,
                    )
                )
                await asyncio.to_thread(app.wait_exit)
                restarted.append(await readmit(cluster, app))
                await load.more(SETTLE, "load on every host again")
        Summary(
            "many hosts: rolling restart",
            {
                **load.figures(),
                "hosts": len(cluster.apps),
                "drained_s": round(max(drained), 2),
                "back_s": round(max(restarted), 2),
            },
        ).report(record_property)
        assert load.wrong() == []
        assert load.errors() == []


class TestAnAppHostUnplugged:
    async def test_the_balancer_drains_it_and_requests_in_flight_go_elsewhere(
        self, cluster: Cluster, cluster_headers: dict[str, str], record_property: RecordProperty
    ) -> None:
        """The host's cable cut (its veth down): nothing refuses, packets just vanish, so the
        balancer learns it from checks that time out, and a request the host had taken waits
        for HAProxy's ``timeout server`` and is then sent to the other host."""
        assert cluster.balancer is not None
        balancer = cluster.balancer
        victim = cluster.apps[-1]
        load = Load(balancer.base_url, cluster_headers, guests("unplugged"), rate=LOAD_RATE)
        async with running(load):
            cut_at = time.monotonic()
            netns.unplug(victim.host)
            try:
                detect_s = await eventually(
                    lambda: balancer.states().get(victim.name) == "DOWN", "DOWN", deadline=60
                )
                await load.more(SETTLE, "load on the survivor")
            finally:
                netns.plug(victim.host)
            back_s = await eventually(
                lambda: balancer.states().get(victim.name) == "UP", "UP", deadline=60
            )
            await load.more(SETTLE, "load on both again")
        slow = [x for x in load.outcomes if x.ended - x.started > 1.0 and x.started >= cut_at]
        Summary(
            "many hosts: app host unplugged",
            {
                **load.figures(),
                "detect_s": round(detect_s, 2),
                "slower_than_1s": len(slow),
                "back_after_plug_s": round(back_s, 2),
            },
        ).report(record_property)
        assert load.wrong() == []
        assert load.errors(since=cut_at + detect_s) == []


class TestARedisMasterKilled:
    async def test_failover_then_recovery_with_no_acknowledged_write_lost(
        self, cluster: Cluster, cluster_headers: dict[str, str], record_property: RecordProperty
    ) -> None:
        """SIGKILL to the master of the invalidation channel's shard (the worst one: the bus
        and some guests' entries live there): its replica takes over; errors only until
        then; no answer hides a write, and PostgreSQL holds every write answered."""
        assert cluster.balancer is not None
        assert cluster.redis is not None
        redis = cluster.redis
        load = Load(cluster.balancer.base_url, cluster_headers, guests("redis"), rate=LOAD_RATE)
        settings = Settings(_env_file=None, redis_url=redis.url, redis_cluster=True)
        victim = redis.owner(key_slot(invalidation_channel(settings).encode()))
        replica = redis.replica_of(victim)
        up: list[int] = []  # how many hosts the balancer had in rotation, polled
        async with running(load):
            watch = asyncio.create_task(hosts_up(cluster, up))
            killed_at = time.monotonic()
            redis.kill(victim)
            try:
                promoted_s = await eventually(
                    lambda: replica in redis.masters(), "the replica takes over", deadline=60
                )
                await load.more(SETTLE, "load after the failover")
            finally:
                watch.cancel()
            errors_after = load.errors(since=killed_at + promoted_s + 5)
        await asyncio.to_thread(redis.restart, victim)
        lost = await lost_writes(cluster, load)
        Summary(
            "many hosts: Redis master killed",
            {
                **load.figures(),
                "promoted_s": round(promoted_s, 2),
                "errors_5s_after_promotion": len(errors_after),
                "hosts_up_min": min(up),
                "lost_writes": len(lost),
            },
        ).report(record_property)
        assert load.wrong() == []
        assert lost == []
        assert errors_after == []
        # Readiness must not fail on every host at once for one Redis node (it did, through
        # the cluster client's slot-map reads: app/platform/kv.py, RedisCache.ping).
        assert min(up) >= 1


class TestTheReplica:
    @pytest.mark.parametrize("how", ["stopped", "lagging"])
    async def test_reads_stay_right(
        self,
        cluster: Cluster,
        cluster_headers: dict[str, str],
        record_property: RecordProperty,
        how: str,
    ) -> None:
        """The replica stopped (then started again), or replaying 15 s late, under load: no
        answer hides an acknowledged write, and no request fails."""
        assert cluster.balancer is not None
        assert cluster.postgres is not None
        postgres = cluster.postgres
        balancer = cluster.balancer.base_url
        load = Load(balancer, cluster_headers, guests(f"replica-{how}"), rate=LOAD_RATE)
        async with running(load):
            if how == "stopped":
                await asyncio.to_thread(postgres.stop_replica)
                await load.more(SETTLE, "load without the replica")
                await asyncio.to_thread(postgres.start_replica)
            else:
                await postgres.lag(LAG_SECONDS)
                await load.more(SETTLE, "load while the replica lags")
                postgres.apply_delay(0)
            await postgres.caught_up()
            await load.more(SETTLE, "load with the replica back")
        Summary(f"many hosts: replica {how}", load.figures()).report(record_property)
        assert load.wrong() == []
        assert load.errors() == []
