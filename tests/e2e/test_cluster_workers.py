"""`enrich serve --workers 2` and `enrich import` on a Redis Cluster: every write and every
import is seen at once by every worker process, as on one Redis (the same writes and imports
as tests/e2e/test_write_then_read.py and test_import_reaches_workers.py, one round each)."""

from __future__ import annotations

import uuid
from collections import Counter

from tests.e2e.test_import_reaches_workers import CACHE_SETTINGS, IMPORTS, run_import, unknown
from tests.e2e.test_write_then_read import WRITES, write
from tests.fixtures.redis_cluster import RedisClusterServers
from tests.fixtures.servers import PrivatePostgres, ServiceFactory
from tests.fixtures.service import RecordProperty, Service, Summary, bearer_headers
from tests.fixtures.workers import Check, ask_everywhere

WORKERS = 2


async def start_on_cluster(
    services: ServiceFactory, database: str, cluster: RedisClusterServers, **settings: str
) -> Service:
    options = {
        "redis_cluster": "true",
        "redis_cluster_seeds": cluster.seeds,
        "redis_prefix": f"e{uuid.uuid4().hex[:8]}:",
        **settings,
    }
    return await services.start(database, cluster.url, workers=WORKERS, **options)


async def test_every_write_is_seen_at_once_by_every_worker(
    private_pg: PrivatePostgres,
    redis_cluster: RedisClusterServers,
    services: ServiceFactory,
    record_property: RecordProperty,
) -> None:
    database = private_pg.create_database()
    service = await start_on_cluster(services, database, redis_cluster)
    headers = await bearer_headers(service, database)
    readers: Counter[int | None] = Counter()
    stale: list[str] = []
    await write(service, headers, WRITES[0], -1)
    expected = WRITES[0].expect(-1)
    for step in WRITES:
        before = await ask_everywhere(service, headers, readers, until_hits=True)
        assert all(expected(answer) for _, _, answer in before), (step.name, before[0][2])
        await write(service, headers, step, 0)
        expected = step.expect(0)
        for _, response, answer in await ask_everywhere(service, headers, readers):
            if not expected(answer):
                stale.append(f"{step.name} worker={response.worker} {answer}")
    summary = Summary(
        "e2e cluster: write-then-read",
        {
            "workers": len([w for w in readers if w is not None]),
            "writes": len(WRITES),
            "reads": sum(readers.values()),
            "stale_reads": len(stale),
        },
    )
    summary.report(record_property)
    assert summary.figures["workers"] == WORKERS, readers
    assert stale == [], stale[:5]


async def test_every_worker_answers_with_an_import_as_soon_as_it_exits(
    private_pg: PrivatePostgres,
    redis_cluster: RedisClusterServers,
    services: ServiceFactory,
    record_property: RecordProperty,
) -> None:
    database = private_pg.create_database()
    service = await start_on_cluster(services, database, redis_cluster, **CACHE_SETTINGS)
    headers = await bearer_headers(service, database, "profiles:read")
    readers: Counter[int | None] = Counter()
    stale: list[str] = []
    expected: Check = unknown
    for n, step in enumerate(IMPORTS):
        before = await ask_everywhere(service, headers, readers, until_hits=True)
        assert all(expected(answer) for _, _, answer in before), (step.name, before[0])
        await run_import(service, step, n)
        expected = step.expect
        for asked, response, answer in await ask_everywhere(service, headers, readers):
            if not expected(answer):
                stale.append(f"{step.name} {asked} worker={response.worker}: {answer}")
    Summary(
        "e2e cluster: import-then-read",
        {"imports": len(IMPORTS), "reads": sum(readers.values()), "stale_reads": len(stale)},
    ).report(record_property)
    assert not stale, "\n".join(stale)
