"""The key-value store and the rate limiter on a real Redis Cluster (three masters, a replica
each): keys spread over the nodes, multi-key reads and deletes split by slot, counters and
scripts each on one slot."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster

from app.core.settings import Settings
from app.platform import redis_client
from app.platform.kv import RedisCache, create_cache
from app.platform.ratelimit import Limit, LocalLimiter, RedisLimiter
from tests.fixtures.polling import HANG_GUARD_SECONDS
from tests.fixtures.redis_cluster import RedisClusterServers

KEYS = [f"k{i}" for i in range(40)]  # enough names to land on every master


def cluster_settings(servers: RedisClusterServers, prefix: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=servers.url,  # type: ignore[arg-type]
        redis_cluster=True,
        redis_cluster_seeds=servers.seeds,
        redis_prefix=prefix,
        redis_socket_timeout=2.0,
        redis_connect_timeout=2.0,
    )


@pytest.fixture
async def store(redis_cluster: RedisClusterServers) -> AsyncIterator[RedisCache]:
    cache = create_cache(cluster_settings(redis_cluster, f"kv-{uuid.uuid4().hex[:8]}:"))
    assert isinstance(cache, RedisCache)
    yield cache
    await cache.close()


async def test_the_store_is_a_cluster_client(store: RedisCache) -> None:
    assert isinstance(store.client, RedisCluster)
    assert await store.ping()


async def test_values_on_every_master_are_written_read_and_deleted_together(
    store: RedisCache, redis_cluster: RedisClusterServers
) -> None:
    await store.set_many((key, key.encode(), 60) for key in KEYS)
    assert await store.get_many([*KEYS, "absent"]) == [*(k.encode() for k in KEYS), None]
    # The keys did land on every master (one node holds a third of them, not all).
    assert isinstance(store.client, RedisCluster)
    owners = {store.client.get_node_from_key(store.full_key(k)).port for k in KEYS}  # type: ignore[union-attr]
    assert owners == set(redis_cluster.masters())
    await store.delete(*KEYS[:30])
    assert await store.get_many(KEYS) == [None] * 30 + [k.encode() for k in KEYS[30:]]


async def test_counters_count_expire_and_are_read_together(store: RedisCache) -> None:
    assert [await store.incr("a", 30) for _ in range(3)] == [1, 2, 3]
    assert await store.incr("b", 30) == 1
    assert await store.counts("a", "b", "c") == [3, 1, 0]
    assert 0 < await store.ttl("a") <= 30


async def test_the_rate_limit_is_shared_by_two_workers(
    redis_cluster: RedisClusterServers,
) -> None:
    settings = cluster_settings(redis_cluster, f"rl-{uuid.uuid4().hex[:8]}:")
    clients = [redis_client.connect(settings, socket_timeout=2.0) for _ in range(2)]
    limiters = [RedisLimiter(c, settings.redis_prefix, LocalLimiter(), 2.0) for c in clients]
    limit = Limit(rate=0.01, burst=10)
    try:
        verdicts = []
        for n in range(30):
            verdicts.append(await limiters[n % 2].take("client-a", limit))
        # Ten tokens in the shared bucket, whichever worker spends them; then refusals.
        assert sum(v is None for v in verdicts) == 10
        # Another client's bucket (another slot, maybe another node) is untouched.
        assert await limiters[0].take("client-b", limit) is None
        # Tokens a worker gives back reach the shared bucket.
        await limiters[1]._give_back([("client-b", limit, 5)])
        await asyncio.sleep(0)
    finally:
        for limiter in limiters:
            await limiter.stop()
        for client in clients:
            await client.aclose()


def test_a_malformed_seed_or_a_braced_prefix_is_refused_clearly(
    redis_cluster: RedisClusterServers,
) -> None:
    with pytest.raises(ValueError, match="host:port"):
        Settings(_env_file=None, redis_cluster=True, redis_cluster_seeds="1.2.3.4")  # type: ignore[call-arg]
    braced = cluster_settings(redis_cluster, "{app}:")
    with pytest.raises(ValueError, match="cannot hold"):
        redis_client.connect(braced, socket_timeout=1.0)
    seeds = Settings(_env_file=None, redis_cluster_seeds=" a:1, [::1]:7000 ")  # type: ignore[call-arg]
    assert seeds.cluster_seeds == [("a", 1), ("::1", 7000)]


async def test_the_ping_does_not_queue_behind_a_slot_map_read(store: RedisCache) -> None:
    """/readyz pings the store. During a failover, each call that hits the dead master has the
    client read the slot map again, one at a time behind a lock; a ping queued there missed
    readiness's 1 s bound on every host at once, and the balancer took them all out (the
    namespace cluster's Redis drill, tests/cluster/long_drills.py). The ping asks the nodes
    themselves: any node that answers is a reachable cluster."""
    client = store.client
    assert isinstance(client, RedisCluster)
    assert await store.ping()
    client._lock = client._lock or asyncio.Lock()
    async with client._lock:  # a slot-map read in progress, as in a failover
        client._initialize = True
        try:
            async with asyncio.timeout(HANG_GUARD_SECONDS):
                assert await store.ping() is True
        finally:
            client._initialize = False
