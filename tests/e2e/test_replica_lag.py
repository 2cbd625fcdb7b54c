"""Write, then read on every worker, while the read replica lags on purpose.

`enrich serve --workers 2` on a private primary, its streaming replica and a private Redis.
Before each write every worker holds the old answer; the replica replays each commit only
seconds late (``recovery_min_apply_delay``). Right after the write is answered, enrich and
profile reads on new connections, spread over the workers, must all show it, while the replica
itself still does not.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import asyncpg
import orjson

from tests.fixtures.pg_replica import ReplicatedPostgres, replicated_pg  # noqa: F401
from tests.fixtures.polling import eventually
from tests.fixtures.servers import PrivateRedis, ServiceFactory
from tests.fixtures.service import RawResponse, Service, bearer_headers

WORKERS = 2
ROUNDS = 3
LAG_SECONDS = 15.0  # far longer than the reads made meanwhile, even on a busy machine
EMAIL = "lagging@example.com"


def tier(answer: RawResponse) -> Any:
    assert answer.status == 200, answer.body
    return orjson.loads(answer.body)["traits"].get("tier")


async def put(service: Service, headers: dict[str, str], value: str) -> None:
    answer = await service.request_on_new_connection(
        "PUT",
        f"/v1/profiles/email/{EMAIL}",
        headers={**headers, "Content-Type": "application/json"},
        body=orjson.dumps({"traits": {"tier": value}}),
    )
    assert answer.status in (200, 201), answer.body


async def tiers_everywhere(service: Service, headers: dict[str, str]) -> set[Any]:
    """What every worker answers, twice each, to enrich and to a profile GET."""
    enriched = await service.on_every_worker(
        lambda: service.enrich_on_new_connection(headers, {"email": EMAIL})
    )
    read = await service.on_every_worker(
        lambda: service.request_on_new_connection(
            "GET", f"/v1/profiles/email/{EMAIL}", headers=headers
        )
    )
    return {tier(answer) for answer in enriched + read}


async def test_every_worker_sees_a_write_at_once_while_the_replica_lags(
    replicated_pg: ReplicatedPostgres,  # noqa: F811
    private_redis: PrivateRedis,
    services: ServiceFactory,
) -> None:
    replicated_pg.apply_delay(0)
    primary, replica = replicated_pg.create_database()
    await replicated_pg.caught_up()
    service = await services.start(
        primary,
        private_redis.url,
        workers=WORKERS,
        database_replica_urls=replica,
        database_replica_probe_seconds="0.05",
        database_replica_max_lag_seconds="60",
    )
    headers = await bearer_headers(service, primary)
    await put(service, headers, "tier-0")
    await replicated_pg.caught_up()

    async def replica_serves() -> bool:
        # A new guest each time: a miss, until the workers read one on the replica.
        stranger = {"email": f"{uuid4().hex}@example.com"}
        await service.enrich_on_new_connection(headers, stranger)
        return "enrich-lookup" in await replicated_pg.application_names(primary)

    await eventually(replica_serves, "a miss is read on the replica")
    assert await tiers_everywhere(service, headers) == {"tier-0"}
    try:
        await replicated_pg.lag(LAG_SECONDS)
        for n in range(1, ROUNDS + 1):
            await put(service, headers, f"tier-{n}")
            assert await tiers_everywhere(service, headers) == {f"tier-{n}"}
            lagging_copy = await _replica_tier(replicated_pg, primary)
            assert lagging_copy != f"tier-{n}", "the replica was not lagging: nothing was tested"
        await replicated_pg.caught_up()
        assert await tiers_everywhere(service, headers) == {f"tier-{ROUNDS}"}
    finally:
        replicated_pg.apply_delay(0)


async def _replica_tier(replicated: ReplicatedPostgres, primary_url: str) -> Any:
    name = primary_url.rsplit("/", 1)[1]
    url = replicated.replica.url(name).replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(url, timeout=5)
    try:
        return await connection.fetchval(
            "SELECT p.traits->>'tier' FROM identifiers i JOIN profiles p ON p.id = i.profile_id"
            " WHERE i.type = 'email' AND i.value = $1",
            EMAIL,
        )
    finally:
        await connection.close()
