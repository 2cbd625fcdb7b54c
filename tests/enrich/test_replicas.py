"""Read replicas: misses and profile GETs on a real streaming replica, never hiding a write.

A private primary and its replica (``tests/fixtures/pg_replica.py``); each app instance stands
for a worker process (same database, same Redis prefix, the invalidation bus between them).
The lag is made on purpose (``recovery_min_apply_delay``), and each test first checks that the
replica really lacks the write while the reads that must show it are made.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.core.settings import Settings
from tests.conftest import RunningApp, start_app
from tests.fixtures.callers import Caller, caller_on
from tests.fixtures.databases import REDIS_URL
from tests.fixtures.pg_replica import ReplicatedPostgres, replicated_pg  # noqa: F401
from tests.fixtures.polling import HANG_GUARD_SECONDS, eventually
from tests.fixtures.service import RELAXED_DEADLINE_MS

LAG_SECONDS = 5.0  # far longer than the reads made while the replica lags
HUNG_ATTEMPTS = 5
ROUNDS = 3


def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


class Deployment:
    """Several app instances on the primary, the replica and one Redis prefix."""

    def __init__(self, primary: str, replica: str, prefix: str) -> None:
        self.primary, self.replica, self.prefix = primary, replica, prefix
        self.stack = contextlib.AsyncExitStack()

    def settings(self) -> Settings:
        return Settings(  # type: ignore[call-arg]
            _env_file=None,
            environment="test",
            database_url=self.primary,
            database_replica_urls=self.replica,
            database_replica_probe_seconds=0.05,
            database_replica_max_lag_seconds=60,
            redis_url=REDIS_URL,
            redis_prefix=self.prefix,
            public_url="http://testserver",
            log_level="WARNING",
            deadline_ms=RELAXED_DEADLINE_MS,
            metrics_allow_networks="203.0.113.0/24",  # the test client's address
        )

    async def start(self) -> RunningApp:
        app = await self.stack.enter_async_context(
            contextlib.asynccontextmanager(start_app)(self.settings())
        )
        # Listening on the bus, as a worker must be before it may use the replica.
        await eventually(lambda: app.runtime.enrich_cache.bus.listening, "the bus listens")
        return app

    async def replica_tier(self, email: str) -> str | None:
        """What the replica itself holds for ``email`` now."""
        return await _tier_at(self.replica, email)

    async def replica_clients(self) -> set[str]:
        """The application names connected to the replica's database."""
        connection = await asyncpg.connect(plain(self.replica), timeout=5)
        try:
            rows = await connection.fetch(
                "SELECT application_name FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await connection.close()
        return {row[0] for row in rows}


async def metrics(app: RunningApp, replica: str) -> dict[str, float]:
    """The replica metrics /metrics shows now: reads by server, and this replica's gauges."""
    text = (await app.http.get("/metrics")).text
    database = replica.rsplit("/", 1)[1]
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "enrich_db_reads_total":
                found[sample.labels["server"]] = sample.value
            elif family.name.startswith("enrich_replica_"):
                if sample.labels["replica"].endswith(f"/{database}"):
                    found[family.name] = sample.value
    return found


async def _tier_at(url: str, email: str) -> str | None:
    connection = await asyncpg.connect(plain(url), timeout=5)
    try:
        return await connection.fetchval(
            "SELECT p.traits->>'tier' FROM identifiers i JOIN profiles p ON p.id = i.profile_id"
            " WHERE i.type = 'email' AND i.value = $1",
            email,
        )
    finally:
        await connection.close()


@pytest.fixture
async def deployment(
    replicated_pg: ReplicatedPostgres,  # noqa: F811
    redis_key_prefix: str,
) -> AsyncIterator[Deployment]:
    replicated_pg.apply_delay(0)
    primary, replica = replicated_pg.create_database()
    await replicated_pg.caught_up()
    chosen = Deployment(primary, replica, f"{redis_key_prefix}{uuid4().hex[:8]}:")
    async with chosen.stack:
        yield chosen
    replicated_pg.apply_delay(0)
    if not replicated_pg.replica.running:
        replicated_pg.start_replica()


async def put_tier(app: RunningApp, caller: Caller, email: str, tier: str) -> None:
    response = await app.http.put(
        f"/v1/profiles/email/{email}", json={"traits": {"tier": tier}}, headers=caller.headers
    )
    assert response.status_code in (200, 201), response.text


async def enrich_tier(app: RunningApp, caller: Caller, email: str) -> Any:
    response = await app.http.post(
        "/v1/enrich", json={"identifiers": {"email": email}}, headers=caller.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["traits"].get("tier")


async def get_tier(app: RunningApp, caller: Caller, email: str) -> Any:
    response = await app.http.get(f"/v1/profiles/email/{email}", headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.json()["traits"].get("tier")


class TestReplicaReads:
    async def test_misses_and_profile_reads_go_to_the_replica(self, deployment: Deployment) -> None:
        app = await deployment.start()
        caller = await caller_on(app)
        await put_tier(app, caller, "jane@example.com", "gold")

        async def replica_answers() -> bool:
            # A guest never seen before: a miss each time, until one is read on the replica.
            await enrich_tier(app, caller, f"{uuid4().hex}@example.com")
            return "enrich-lookup" in await deployment.replica_clients()

        before = await metrics(app, deployment.replica)
        await eventually(replica_answers, "an enrich miss is read on the replica")
        assert await enrich_tier(app, caller, "jane@example.com") == "gold"
        assert await get_tier(app, caller, "jane@example.com") == "gold"
        after = await metrics(app, deployment.replica)
        assert after["replica"] > before.get("replica", 0)
        assert after["enrich_replica_usable"] == 1
        assert after["enrich_replica_behind_bytes"] >= 0

    async def test_a_write_is_seen_at_once_while_the_replica_lags(
        self,
        deployment: Deployment,
        replicated_pg: ReplicatedPostgres,  # noqa: F811
    ) -> None:
        first, second = await deployment.start(), await deployment.start()
        caller = await caller_on(first)
        email = "lag@example.com"
        await put_tier(first, caller, email, "tier-0")
        await replicated_pg.caught_up()
        for app in (first, second):  # both hold the old answer in their caches
            for _ in range(2):
                assert await enrich_tier(app, caller, email) == "tier-0"
            assert await get_tier(app, caller, email) == "tier-0"
        await replicated_pg.lag(LAG_SECONDS)
        for n in range(1, ROUNDS + 1):
            await put_tier(first, caller, email, f"tier-{n}")
            seen = [await enrich_tier(app, caller, email) for app in (first, second)]
            seen += [await get_tier(app, caller, email) for app in (first, second)]
            seen += [await enrich_tier(app, caller, email) for app in (second, first)]
            # The replica did not have the write while those reads were made.
            assert await deployment.replica_tier(email) != f"tier-{n}"
            assert seen == [f"tier-{n}"] * 6
        # A worker that starts now heard none of those writes: it reads them anyway.
        late = await deployment.start()
        assert await enrich_tier(late, caller, email) == f"tier-{ROUNDS}"
        assert await get_tier(late, caller, email) == f"tier-{ROUNDS}"
        assert await deployment.replica_tier(email) != f"tier-{ROUNDS}"
        # Once the replica caught up, no cache kept an older answer.
        await replicated_pg.caught_up()
        for app in (first, second, late):
            assert await enrich_tier(app, caller, email) == f"tier-{ROUNDS}"
            assert await get_tier(app, caller, email) == f"tier-{ROUNDS}"

    async def test_reads_are_answered_while_the_replica_is_down(
        self,
        deployment: Deployment,
        replicated_pg: ReplicatedPostgres,  # noqa: F811
    ) -> None:
        app = await deployment.start()
        caller = await caller_on(app)
        await put_tier(app, caller, "down@example.com", "before")
        await replicated_pg.caught_up()
        replicated_pg.stop_replica()

        async def shown_unusable() -> bool:
            return (await metrics(app, deployment.replica))["enrich_replica_usable"] == 0

        await eventually(shown_unusable, "/metrics says the replica is not usable")
        before = await metrics(app, deployment.replica)
        await put_tier(app, caller, "down@example.com", "after")
        assert await enrich_tier(app, caller, "down@example.com") == "after"
        assert await get_tier(app, caller, "down@example.com") == "after"
        stranger = f"{uuid4().hex}@example.com"  # a miss, with no write to wait for
        assert await enrich_tier(app, caller, stranger) is None
        await put_tier(app, caller, stranger, "new")
        assert await get_tier(app, caller, stranger) == "new"
        after = await metrics(app, deployment.replica)
        assert after["primary"] > before.get("primary", 0)  # (the replica was not asked)
        assert after.get("replica", 0) == before.get("replica", 0)
        replicated_pg.start_replica()

    @pytest.mark.parametrize("path", ["enrich", "profile"])
    async def test_a_hung_replica_delays_reads_but_the_primary_answers(
        self,
        deployment: Deployment,
        replicated_pg: ReplicatedPostgres,  # noqa: F811
        path: str,
    ) -> None:
        """A replica that stops answering with its connections open (a hung host): a read
        sent to it gives up (enrich: after half the deadline; a profile read: after the probe's
        timeout) and the primary answers; the probe then takes it out of use. Tried until a
        read met the hung replica (the probe may find it first), at most HUNG_ATTEMPTS times;
        every read is answered rightly."""
        app = await deployment.start()
        caller = await caller_on(app)
        read = enrich_tier if path == "enrich" else get_tier
        emails = [f"hung-{n}@example.com" for n in range(HUNG_ATTEMPTS)]
        for n, email in enumerate(emails):
            await put_tier(app, caller, email, f"tier-{n}")
        await put_tier(app, caller, "warm@example.com", "warm")
        await replicated_pg.caught_up()

        async def in_use() -> bool:
            # The replica usable, and this path's connections to it open (a read made there).
            await read(app, caller, "warm@example.com")
            return (await metrics(app, deployment.replica))["enrich_replica_usable"] == 1

        for n, email in enumerate(emails):
            await eventually(in_use, "the replica is in use again")
            await read(app, caller, "warm@example.com")
            before = await metrics(app, deployment.replica)
            with replicated_pg.replica_hung():
                async with asyncio.timeout(HANG_GUARD_SECONDS):
                    assert await read(app, caller, email) == f"tier-{n}"
            after = await metrics(app, deployment.replica)
            if after.get("fallback", 0) > before.get("fallback", 0):
                return
        raise AssertionError(f"no read met the hung replica in {HUNG_ATTEMPTS} tries")
