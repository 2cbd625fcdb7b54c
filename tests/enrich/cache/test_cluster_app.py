"""The app on a Redis Cluster (three masters, a replica each) and PostgreSQL: what a caller
sees is what it sees on one Redis. The cache-level and delivery tests of the single-Redis
suite run here again on the cluster (imported below), next to the cluster's own: answers
whose identifiers live on several nodes, rate limits and failed-login lockouts shared by two
workers, a revocation and a new signing key seen by another worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from app.auth.signing_keys import KeyService
from app.core.settings import Settings
from app.enrich.cache.l2 import l2_key
from app.enrich.cache.remote import invalidation_channel
from tests.conftest import AppFactory, Backend, RunningApp, run_sync
from tests.enrich.cache import test_store
from tests.enrich.cache.test_bus_redis import TestDelivery, write_headers
from tests.enrich.cache.test_store import JANE, _token_headers, count_lookups, enrich
from tests.fixtures.callers import fetch_token, make_client_on
from tests.fixtures.databases import truncate_all
from tests.fixtures.polling import eventually
from tests.fixtures.redis_cluster import RedisClusterServers

# Run again on the cluster backend (pytest collects them in this module, with its fixtures).
__all__ = ["TestCacheLevelsOnCluster", "TestDelivery"]

ENRICH = "/v1/enrich"


@dataclass
class ClusterBackend(Backend):
    """PostgreSQL and the Redis Cluster. Named "postgres" as the backend with L2 is in the
    shared tests; each test has a key prefix of its own (the cluster goes with the run)."""

    seeds: str = ""

    def settings(self, **overrides: Any) -> Settings:
        cluster = {"redis_cluster": True, "redis_cluster_seeds": self.seeds}
        return super().settings(**{**cluster, **overrides})


def cluster_backend(pg_url: str, servers: RedisClusterServers) -> Iterator[Backend]:
    """The backend, then the database emptied (the keys go with the cluster)."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    yield ClusterBackend("postgres", pg_url, servers.url, prefix, servers.seeds)
    run_sync(truncate_all(pg_url))


@pytest.fixture
def backend(pg_url: str, redis_cluster: RedisClusterServers) -> Iterator[Backend]:
    yield from cluster_backend(pg_url, redis_cluster)


class TestCacheLevelsOnCluster(test_store.TestCacheLevels):
    async def test_an_l2_answer_made_under_another_size_cap_is_cut_to_this_one(
        self, app_factory: AppFactory, backend: Backend
    ) -> None:
        """As on one Redis; the reader starts before the writer fills L2, and the fill
        comes after the write's second delete (a slow start must not race it)."""
        writer = await app_factory(cache_l1_max_entries=0)
        reader = await app_factory(cache_l1_max_entries=0, answer_max_chars=1000)
        headers = await _token_headers(writer)
        big = {**JANE, "segments": [f"segment-{n:04d}" for n in range(300)]}
        await writer.http.put("/v1/profiles/email/jane@example.com", json=big, headers=headers)
        pending = writer.runtime.enrich_cache._tasks
        await eventually(lambda: not pending, "the write's second delete")
        assert len((await enrich(writer.http, headers)).content) > 1000
        calls = count_lookups(reader)
        answer = await enrich(reader.http, headers)
        assert len(answer.text) <= 1000
        assert answer.json()["truncated"] is True
        assert answer.headers["x-cache"] == "hit"
        assert calls[0] == 0  # from the writer's L2 entry, cut again here


def node_of(app: RunningApp, key: str) -> int:
    client = app.runtime.enrich_cache.l2.redis.client  # type: ignore[union-attr]
    assert isinstance(client, RedisCluster)
    node = client.get_node_from_key(key)
    assert node is not None
    return int(node.port)


async def test_a_guest_known_by_identifiers_on_several_nodes_is_an_l2_hit(
    app_factory: AppFactory, backend: Backend
) -> None:
    running = await app_factory(cache_l1_max_entries=0)
    headers = await write_headers(running)
    put = await running.http.put("/v1/profiles/crm_id/C-7", json={}, headers=headers)
    assert put.status_code == 201
    # An unknown identifier first, on another master than the known one: the answer depends
    # on both entries.
    known = node_of(running, backend.redis_prefix + l2_key(("crm_id", "C-7")))
    email = next(
        f"nobody-{n}@example.com"
        for n in range(100)
        if node_of(running, backend.redis_prefix + l2_key(("email", f"nobody-{n}@example.com")))
        != known
    )
    ask = {"identifiers": {"email": email, "crm_id": "C-7"}}
    calls = count_lookups(running)
    first = await running.http.post(ENRICH, json=ask, headers=headers)
    second = await running.http.post(ENRICH, json=ask, headers=headers)
    assert first.json()["found"]
    assert second.json() == first.json()
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("miss", "hit")
    assert calls[0] == 1
    # A write through the other identifier drops both entries, on both nodes.
    await running.http.patch(
        "/v1/profiles/crm_id/C-7",
        json={"traits": {"tier": "gold"}},
        headers={**headers, "Content-Type": "application/merge-patch+json"},
    )
    after = await running.http.post(ENRICH, json=ask, headers=headers)
    assert after.json()["traits"] == {"tier": "gold"}


async def test_the_bus_channel_is_sharded_and_its_keys_share_its_slot(
    running: RunningApp,
) -> None:
    settings = running.runtime.settings
    channel = invalidation_channel(settings)
    assert channel == "{" + settings.redis_prefix + "enrich:invalidate}"
    bus = running.runtime.enrich_cache.bus
    assert bus.listening
    client = bus.client
    assert isinstance(client, RedisCluster)
    slots = {client.keyslot(name) for name in (channel, bus._members_key, bus._ack_key("0" * 32))}
    assert len(slots) == 1


async def test_two_workers_share_one_rate_limit(app_factory: AppFactory) -> None:
    first = await app_factory(rate_limit_rps=0.01, rate_limit_burst=6)
    second = await app_factory(rate_limit_rps=0.01, rate_limit_burst=6)
    client = await make_client_on(first, "profiles:read")
    headers = {"Authorization": f"Bearer {await fetch_token(first.http, client)}"}
    ask = {"identifiers": {"email": "someone@example.com"}}
    statuses = []
    for n in range(16):
        app = (first, second)[n % 2]
        statuses.append((await app.http.post(ENRICH, json=ask, headers=headers)).status_code)
    assert statuses.count(200) == 6
    assert set(statuses[-4:]) == {429}


async def test_failed_logins_on_one_worker_lock_the_client_out_on_another(
    app_factory: AppFactory,
) -> None:
    first = await app_factory(auth_max_failures_per_client=3)
    second = await app_factory(auth_max_failures_per_client=3)
    client = await make_client_on(first, "profiles:read")
    token = {"grant_type": "client_credentials"}
    for _ in range(3):
        wrong = await first.http.post("/oauth/token", data=token, auth=(client.client_id, "x"))
        assert wrong.status_code == 401
    # The fourth wrong guess, on the other worker, meets the lock (the right secret
    # always gets through: the lock is on failures only).
    locked = await second.http.post("/oauth/token", data=token, auth=(client.client_id, "x"))
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) >= 1
    right = await second.http.post(
        "/oauth/token", data=token, auth=(client.client_id, client.client_secret)
    )
    assert right.status_code == 200


async def test_a_revocation_and_a_new_signing_key_reach_another_worker(
    app_factory: AppFactory,
) -> None:
    first = await app_factory()
    second = await app_factory()
    client = await make_client_on(first, "profiles:read")
    ask = {"identifiers": {"email": "someone@example.com"}}
    token = await fetch_token(first.http, client)
    headers = {"Authorization": f"Bearer {token}"}
    assert (await second.http.post(ENRICH, json=ask, headers=headers)).status_code == 200
    revoked = await first.http.post(
        "/oauth/revoke", data={"token": token}, auth=(client.client_id, client.client_secret)
    )
    assert revoked.status_code == 200

    async def refused() -> bool:
        answer = await second.http.post(ENRICH, json=ask, headers=headers)
        return answer.status_code == 401

    await eventually(refused, "the other worker refuses the revoked token")
    async with first.runtime.sessionmaker() as session:
        kid = await KeyService(session).rotate("EdDSA", first.runtime.settings.token_ttl_seconds)
        await session.commit()
    await first.runtime.auth_sync.reload_keys()
    fresh = await fetch_token(first.http, client)
    assert first.runtime.keyring.active_kid == kid
    answer = await second.http.post(ENRICH, json=ask, headers={"Authorization": f"Bearer {fresh}"})
    assert answer.status_code == 200  # the other worker loads the new key on demand
