"""Redis Cluster drills under load: a master killed (its replica takes over) and a slot moved
to another master, while two workers answer a loop of reads and writes.

Worker A has no L1 (every read goes through L2), worker B has one (its freshness rests on the
invalidation bus); writes go through A and every read is checked against the last write that
was answered. What a caller may see: errors only while the cluster switches, never an answer
older than an acknowledged write, and the cache working again afterwards without a restart.
Each drill prints its figures (requests, errors, seconds to recover).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis.asyncio as aredis
from redis.crc import key_slot

from app.enrich.cache.l2 import l2_key
from app.enrich.cache.remote import invalidation_channel
from tests.conftest import AppFactory, Backend, RunningApp
from tests.enrich.cache.test_bus_redis import write_headers
from tests.enrich.cache.test_cluster_app import cluster_backend
from tests.fixtures.polling import eventually
from tests.fixtures.redis_cluster import RedisClusterServers
from tests.fixtures.service import RecordProperty, Summary

GUESTS = [f"C-{n}" for n in range(24)]
WRITE_EVERY = 6
PATCH = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture
def backend(pg_url: str, redis_cluster: RedisClusterServers) -> Iterator[Backend]:
    yield from cluster_backend(pg_url, redis_cluster)


@dataclass
class Answer:
    at: float
    kind: str  # "read" or "write"
    worker: str
    guest: str
    status: int
    level: str | None
    correct: bool


@dataclass
class Load:
    """A loop of requests over ``guests``: reads on A and B in turn, a write through A every
    ``WRITE_EVERY``; each read is checked against the last write answered for its guest."""

    a: RunningApp
    b: RunningApp
    headers: dict[str, str]
    guests: list[str]
    answers: list[Answer] = field(default_factory=list)
    tiers: dict[str, str | None] = field(default_factory=dict)  # None: a write failed
    stopping: bool = False

    async def read(self, app: RunningApp, worker: str, guest: str) -> None:
        ask = {"identifiers": {"crm_id": guest}}
        response = await app.http.post("/v1/enrich", json=ask, headers=self.headers)
        expected = self.tiers.get(guest)
        correct = True
        level = response.headers.get("x-cache")
        # A stale answer says so ("stale": true): the database missed the deadline, and the
        # last copy known is the documented answer then. Every other must show the write.
        fresh = level != "stale"
        if response.status_code == 200 and guest in self.tiers and expected is not None and fresh:
            correct = response.json()["traits"].get("tier") == expected
        self.answers.append(
            Answer(
                time.monotonic(),
                "read",
                worker,
                guest,
                response.status_code,
                level,
                correct,
            )
        )

    async def write(self, guest: str, n: int) -> None:
        tier = f"t{n}"
        response = await self.a.http.patch(
            f"/v1/profiles/crm_id/{guest}",
            json={"traits": {"tier": tier}},
            headers={**self.headers, **PATCH},
        )
        ok = response.status_code == 200
        self.tiers[guest] = tier if ok else None  # (a failed write may or may not stand)
        now = time.monotonic()
        self.answers.append(Answer(now, "write", "a", guest, response.status_code, None, True))

    async def run(self) -> None:
        n = 0
        while not self.stopping:
            guest = self.guests[n % len(self.guests)]
            if n % WRITE_EVERY == 0:
                await self.write(guest, n)
                # Right after the write is answered: both workers must show it.
                await self.read(self.b, "b", guest)
                await self.read(self.a, "a", guest)
            else:
                await self.read((self.a, self.b)[n % 2], "ab"[n % 2], guest)
            n += 1

    def count(self) -> int:
        return len(self.answers)

    async def more(self, requests: int, what: str) -> None:
        """Wait until ``requests`` more answers came in (the loop keeps going)."""
        target = self.count() + requests
        await eventually(lambda: self.count() >= target, what, deadline=120)

    def story(self, wrong: list[Answer], since: float) -> str:
        """The answers about each wrongly answered guest, times relative to ``since``."""
        guests = {x.guest for x in wrong}
        return "\n".join(
            f"{x.at - since:+.3f} {x.kind} {x.worker} {x.guest} {x.status} {x.level} {x.correct}"
            for x in self.answers
            if x.guest in guests
        )

    def errors(self, since: float = 0.0, until: float = float("inf")) -> list[Answer]:
        return [x for x in self.answers if since <= x.at <= until and not 200 <= x.status < 300]


async def start_load(app_factory: AppFactory, guests: list[str]) -> tuple[Load, asyncio.Task[None]]:
    a = await app_factory(cache_l1_max_entries=0)
    b = await app_factory()
    headers = await write_headers(a)
    for guest in set(guests):
        put = await a.http.put(f"/v1/profiles/crm_id/{guest}", json={}, headers=headers)
        assert put.status_code == 201
    load = Load(a, b, headers, guests)
    task = asyncio.create_task(load.run())
    await load.more(3 * len(set(guests)), "the load warms the caches")
    return load, task


async def stop_load(load: Load, task: asyncio.Task[None]) -> None:
    load.stopping = True
    await asyncio.wait_for(task, 60)


def slot_of(load: Load, guest: str) -> int:
    prefix = load.a.runtime.settings.redis_prefix
    return key_slot((prefix + l2_key(("crm_id", guest))).encode())


@pytest.mark.parametrize("how", ["master killed", "CLUSTER FAILOVER"])
async def test_a_master_failover_costs_errors_only_while_it_lasts(
    app_factory: AppFactory,
    redis_cluster: RedisClusterServers,
    record_property: RecordProperty,
    how: str,
) -> None:
    load, task = await start_load(app_factory, GUESTS)
    channel = invalidation_channel(load.a.runtime.settings)
    victim = redis_cluster.owner(key_slot(channel.encode()))  # the bus's shard, and keys
    replica = redis_cluster.replica_of(victim)
    on_victim = {g for g in GUESTS if redis_cluster.owner(slot_of(load, g)) == victim}
    assert on_victim  # some guests' entries live there too
    switched_at = time.monotonic()
    if how == "master killed":
        redis_cluster.kill(victim)
    else:  # the replica takes over in agreement with its master, which becomes its replica
        with redis_cluster.client(replica) as client:
            client.execute_command("CLUSTER", "FAILOVER")
    try:
        promoted = await eventually(
            lambda: replica in redis_cluster.masters(), "the replica takes over", deadline=60
        )

        def recovered() -> bool:
            after = [x for x in load.answers if x.at > switched_at + promoted]
            return load.b.runtime.enrich_cache.bus.listening and any(
                x.worker == "a" and x.level == "hit" and x.guest in on_victim for x in after
            )

        await eventually(recovered, "L2 hits on the new master, the bus heard", deadline=60)
        recovered_at = time.monotonic()
        await load.more(4 * len(GUESTS), "requests after the recovery")
    finally:
        await stop_load(load, task)
        if how == "master killed":
            redis_cluster.restart(victim)  # (it rejoins as a replica)
    wrong = [x for x in load.answers if not x.correct]
    during = load.errors(switched_at, recovered_at)
    Summary(
        f"cluster: failover ({how})",
        {
            "requests": load.count(),
            "errors": len(during),
            "errors_after_recovery": len(load.errors(recovered_at)),
            "wrong_answers": len(wrong),
            "declared_stale": len([x for x in load.answers if x.level == "stale"]),
            "promoted_s": round(promoted, 2),
            "recovered_s": round(recovered_at - switched_at, 2),
        },
    ).report(record_property)
    assert wrong == [], load.story(wrong, switched_at)
    assert load.errors(until=switched_at) == []
    assert load.errors(since=recovered_at) == []


async def move_slot(servers: RedisClusterServers, slot: int, load: Load) -> int:
    """Move ``slot`` to another master the way ``redis-cli --cluster reshard`` does, under
    the load (a few requests are answered in each phase); returns the new owner's port."""
    source = servers.owner(slot)
    target = next(port for port in servers.masters() if port != source)
    clients = {port: aredis.Redis(host="127.0.0.1", port=port) for port in servers.masters()}
    try:
        ids = {p: (await c.execute_command("CLUSTER", "MYID")).decode() for p, c in clients.items()}
        await clients[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        await clients[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        await load.more(20, "requests while the slot is migrating")
        while keys := await clients[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            await clients[source].execute_command(
                "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys
            )
            await load.more(5, "requests between key moves")
        for port in (target, source, *clients):
            await clients[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
    finally:
        for client in clients.values():
            await client.aclose()
    return target


@pytest.mark.parametrize("moved", ["hot key", "invalidation channel"])
async def test_moving_a_slot_under_load_keeps_answers_right(
    app_factory: AppFactory,
    redis_cluster: RedisClusterServers,
    record_property: RecordProperty,
    moved: str,
) -> None:
    hot = "C-hot"
    load, task = await start_load(app_factory, [hot, hot, hot, "C-1"])
    channel = invalidation_channel(load.a.runtime.settings)
    slot = slot_of(load, hot) if moved == "hot key" else key_slot(channel.encode())
    started = time.monotonic()
    try:
        target = await move_slot(redis_cluster, slot, load)
        moved_at = time.monotonic()

        def settled() -> bool:
            after = [x for x in load.answers if x.at > moved_at]
            return load.b.runtime.enrich_cache.bus.listening and any(
                x.worker == "a" and x.level == "hit" and x.guest == hot for x in after
            )

        await eventually(settled, "hits and a listening bus after the move", deadline=60)
        settled_at = time.monotonic()
        await load.more(40, "requests after the move")
    finally:
        await stop_load(load, task)
    assert redis_cluster.owner(slot) == target
    wrong = [x for x in load.answers if not x.correct]
    Summary(
        f"cluster: slot of the {moved} moved",
        {
            "requests": load.count(),
            "errors": len(load.errors()),
            "wrong_answers": len(wrong),
            "declared_stale": len([x for x in load.answers if x.level == "stale"]),
            "move_s": round(moved_at - started, 2),
            "settled_s": round(settled_at - moved_at, 2),
        },
    ).report(record_property)
    assert wrong == []
    assert load.errors() == []
