"""PostgreSQL stopped (a crash: ``pg_ctl stop -m immediate``) under a running service.

Cached answers keep coming (a hit while fresh, then ``stale``); uncached lookups and writes get
503 with Retry-After quickly; every write that was acknowledged survives; and once PostgreSQL
is started again (same data directory, same port) everything works without a restart.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.enrich.cache.store import SECOND_DELETE_SECONDS
from tests.faults.load import document, email, enrich, enrich_load, seed
from tests.fixtures.polling import eventually
from tests.fixtures.servers import (
    PrivatePostgres,
    PrivateRedis,
    ServiceFactory,
)
from tests.fixtures.service import (
    RecordProperty,
    Summary,
    bearer_headers,
)

PROFILES = 10
TTL_SECONDS = 2.0  # soft TTL of both cache levels in this test (jitter: +-10 %)
# Hang guards (what a client measures includes queueing on a busy two-core machine): the
# enrich deadline shows as 503s, a refused database connection as a 503 within the pool
# timeout; a request waiting on the dead database without a timeout would never come back.
MAX_LATENCY_MS = 15_000
MAX_WRITE_LATENCY_MS = 15_000


@dataclass
class Writer:
    """PUTs new profiles one after another; remembers which ones were acknowledged."""

    http: httpx.AsyncClient
    headers: dict[str, str]
    acknowledged: list[int] = field(default_factory=list)
    refused: list[httpx.Response] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        index = 1000
        while not self.stop.is_set():
            index += 1
            try:
                response = await self.http.put(
                    f"/v1/profiles/email/{email(index)}",
                    json=document(index, "written"),
                    headers=self.headers,
                )
            except httpx.HTTPError as exc:
                self.failed.append(type(exc).__name__)
                continue
            if response.status_code in (200, 201):
                self.acknowledged.append(index)
            elif response.status_code == 503:
                self.refused.append(response)
                await asyncio.sleep(0.05)
            else:
                self.failed.append(f"{response.status_code} {response.text[:200]}")


async def timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await call
    return response, (time.perf_counter() - started) * 1000


class TestPostgresStopped:
    async def test_cached_answers_keep_coming_and_nothing_acknowledged_is_lost(
        self,
        own_pg: PrivatePostgres,
        private_redis: PrivateRedis,
        services: ServiceFactory,
        record_property: RecordProperty,
    ) -> None:
        database = own_pg.create_database()
        service = await services.start(
            database,
            private_redis.url,
            cache_l1_ttl_seconds=str(TTL_SECONDS),
            cache_l2_ttl_seconds=str(TTL_SECONDS),
            deadline_ms="250",  # production's: this test is about what happens past it
        )
        headers = await bearer_headers(service, database)
        cached = [email(i) for i in range(PROFILES)]
        async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as http:
            await seed(http, headers, PROFILES, "v1")
            # A write deletes its L2 entries once more a second later (for readers that raced
            # it): only what is cached after that can be served during the outage. The wait is
            # the service's own fixed delay, a lower bound (the warm-up below runs after it on
            # the service's event loop, whatever the load), not a ceiling.
            await asyncio.sleep(SECOND_DELETE_SECONDS)
            writer = Writer(http, headers)
            writing = asyncio.create_task(writer.run())
            await eventually(lambda: bool(writer.acknowledged), "a write acknowledged")

            warming = time.monotonic()
            await enrich_load(http, headers, cached, total=PROFILES, concurrency=1)
            own_pg.stop("immediate")  # a crash: connections die, nothing is shut down cleanly
            fresh = await enrich_load(http, headers, cached, total=PROFILES, concurrency=2)
            await eventually(lambda: bool(writer.refused), "the writer meeting the outage")
            writer.stop.set()
            await writing

            # Past the soft TTL (and its jitter) of every entry the warm-up filled: each
            # cached guest is answered stale, and stays so while the database is down.
            await eventually(
                lambda: all_stale(http, headers, cached),
                "every cached guest answered stale",
                interval=0.2,
            )
            stale = await enrich_load(http, headers, cached, total=200, concurrency=10)
            unknown = [f"nobody{i}@example.com" for i in range(50)]
            uncached = await enrich_load(http, headers, unknown, total=50, concurrency=5)
            writes = await refused_writes(http, headers)
            ready_during = await http.get("/readyz")

            own_pg.start()
            recovered = await eventually(
                lambda: accepts_writes(http, headers), "writes after restart", interval=0.05
            )
            after = await enrich_load(http, headers, unknown[:10], total=10, concurrency=1)
            ready_after = await http.get("/readyz")
            lost = await missing_writes(http, headers, writer.acknowledged)
            again = await enrich(http, headers, email(0))

            # A quiet restart: the pools hold connections the server closed, and no request
            # has met them yet. The first requests afterwards must not fail on them.
            own_pg.stop("fast")
            own_pg.start()
            quiet = await first_requests(http, headers)

        summary = Summary(
            "faults: postgres-stopped",
            {
                "cached_requests": len(stale.outcomes),
                "cached_errors": stale.errors,
                "stale_answers": sum(1 for o in stale.outcomes if o.cache == "stale"),
                "max_latency_ms": max(stale.max_ms, uncached.max_ms),
                "uncached_503": sum(1 for o in uncached.outcomes if o.status == 503),
                "writes_503": sum(1 for r, _ in writes if r.status_code == 503),
                "max_write_ms": round(max(ms for _, ms in writes)),
                "acknowledged": len(writer.acknowledged),
                "lost": len(lost),
                "recovered_s": round(recovered, 2),
                "errors_after_quiet_restart": sum(1 for status in quiet if status >= 300),
                "fresh_hits": fresh.caches()["hit"],
            },
        )
        summary.report(record_property)

        assert fresh.errors == 0, fresh.problems()
        # Fresh hits while the soft TTL runs (jitter: -10 %); past it a busy machine may see
        # some of them stale already, which is right too.
        surely_fresh = warming + TTL_SECONDS * 0.9
        assert all(o.cache == "hit" for o in fresh.outcomes if o.at < surely_fresh), [
            (o.cache, round(o.at - warming, 2)) for o in fresh.outcomes
        ]
        assert fresh.caches().keys() <= {"hit", "stale"}
        assert stale.errors == 0, stale.problems()
        assert all(o.body and o.body["stale"] is True for o in stale.outcomes)
        assert stale.caches() == {"stale": len(stale.outcomes)}
        assert {o.status for o in uncached.outcomes} == {503}
        assert all(r.status_code == 503 for r, _ in writes), [r.text for r, _ in writes]
        assert all(r.headers.get("retry-after") for r, _ in writes)
        assert max(stale.max_ms, uncached.max_ms) < MAX_LATENCY_MS
        assert summary.figures["max_write_ms"] < MAX_WRITE_LATENCY_MS
        assert writer.failed == [], writer.failed[:5]
        assert all(r.headers.get("retry-after") for r in writer.refused)
        assert writer.acknowledged, "no write was acknowledged before the crash"
        assert lost == []
        assert after.errors == 0
        assert after.caches() == {"miss": 10}
        assert again.status == 200
        assert again.body is not None
        assert again.body["stale"] is False
        assert summary.figures["errors_after_quiet_restart"] == 0, quiet
        assert ready_during.status_code == 503
        assert ready_during.json()["checks"]["database"] != "ok"
        assert ready_after.status_code == 200


async def all_stale(http: httpx.AsyncClient, headers: dict[str, str], cached: list[str]) -> bool:
    answers = [await enrich(http, headers, address) for address in cached]
    assert all(a.status == 200 for a in answers), [(a.status, a.body) for a in answers]
    return all(a.cache == "stale" for a in answers)


async def refused_writes(
    http: httpx.AsyncClient, headers: dict[str, str]
) -> list[tuple[httpx.Response, float]]:
    """One of each kind of write while PostgreSQL is down."""
    merge = {**headers, "Content-Type": "application/merge-patch+json"}
    event = {"event_id": "e-outage", "type": "view", "identifiers": {"email": email(1)}}
    calls = [
        http.put(f"/v1/profiles/email/{email(0)}", json=document(0, "v2"), headers=headers),
        http.patch(f"/v1/profiles/email/{email(1)}", json={"traits": {"x": 1}}, headers=merge),
        http.delete(f"/v1/profiles/email/{email(2)}", headers=headers),
        http.post("/v1/events", json=event, headers=headers),
        http.post("/v1/profiles/bulk", json=[document(3, "v2")], headers=headers),
        http.get(f"/v1/profiles/email/{email(4)}", headers=headers),
    ]
    return [await timed(call) for call in calls]


async def first_requests(http: httpx.AsyncClient, headers: dict[str, str]) -> list[int]:
    """Writes and uncached lookups, one after another, right after a restart."""
    statuses = []
    for index in range(2000, 2005):
        response = await http.put(
            f"/v1/profiles/email/{email(index)}", json=document(index, "late"), headers=headers
        )
        statuses.append(response.status_code)
        statuses.append((await enrich(http, headers, f"new{index}@example.com")).status or 599)
    return statuses


async def accepts_writes(http: httpx.AsyncClient, headers: dict[str, str]) -> bool:
    response = await http.put(
        f"/v1/profiles/email/{email(999)}", json=document(999, "after"), headers=headers
    )
    return response.status_code in (200, 201)


async def missing_writes(
    http: httpx.AsyncClient, headers: dict[str, str], acknowledged: list[int]
) -> list[int]:
    missing = []
    for index in acknowledged:
        response = await http.get(f"/v1/profiles/email/{email(index)}", headers=headers)
        if response.status_code != 200 or response.json()["traits"] != {"tier": "written"}:
            missing.append(index)
    return missing
