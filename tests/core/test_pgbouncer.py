"""The service behind a real PgBouncer in transaction pooling mode (``ENRICH_DATABASE_PGBOUNCER``).

PgBouncer hands each transaction to whichever of its few server connections is free, so a
statement prepared in one transaction is unknown, or its name already taken, in the next. With
the setting on, every path that touches the database works through it: tokens, profile reads
and writes, bulk (COPY), events, enrich misses, and ``enrich import``; many at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import orjson
import pytest

from app.core.settings import Settings
from app.ingest.importer import import_file
from tests.conftest import RunningApp, start_app
from tests.fixtures.callers import Caller, caller_on
from tests.fixtures.databases import REDIS_URL, truncate_all
from tests.fixtures.pgbouncer import PgBouncer, pgbouncer  # noqa: F401
from tests.fixtures.service import RELAXED_DB_POOL_TIMEOUT_SECONDS

CONCURRENT = 40
HANG_GUARD_DEADLINE_MS = 10_000  # the setting's ceiling


def bounced_settings(bouncer: PgBouncer, pg_url: str, prefix: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        environment="test",
        database_url=bouncer.url(pg_url),
        database_pgbouncer=True,
        redis_url=REDIS_URL,
        redis_prefix=f"{prefix}{uuid4().hex[:8]}:",
        public_url="http://testserver",
        log_level="WARNING",
        # 40 requests share PgBouncer's 3 server connections: on a busy machine the last waits
        # past production's pool timeout and past a 2 s deadline (a 503, by design: CI saw one
        # at 2 s); the test is about the paths, so both are hang guards here.
        deadline_ms=HANG_GUARD_DEADLINE_MS,
        db_pool_timeout=RELAXED_DB_POOL_TIMEOUT_SECONDS,
    )


@pytest.fixture
async def bounced(
    pgbouncer: PgBouncer,  # noqa: F811
    pg_url: str,
    redis_key_prefix: str,
) -> AsyncIterator[tuple[RunningApp, Settings]]:
    settings = bounced_settings(pgbouncer, pg_url, redis_key_prefix)
    async with contextlib.asynccontextmanager(start_app)(settings) as app:
        yield app, settings
    await truncate_all(pg_url)


async def put(app: RunningApp, caller: Caller, email: str, tier: str) -> None:
    response = await app.http.put(
        f"/v1/profiles/email/{email}", json={"traits": {"tier": tier}}, headers=caller.headers
    )
    assert response.status_code in (200, 201), response.text


async def enrich(app: RunningApp, caller: Caller, email: str) -> dict[str, object]:
    response = await app.http.post(
        "/v1/enrich", json={"identifiers": {"email": email}}, headers=caller.headers
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


class TestThroughPgBouncer:
    async def test_every_path_works_many_at_once(
        self, bounced: tuple[RunningApp, Settings]
    ) -> None:
        app, _ = bounced
        caller = await caller_on(app)  # a client and a token: the OAuth tables
        emails = [f"g{n}-{uuid4().hex[:6]}@example.com" for n in range(CONCURRENT)]
        await asyncio.gather(*(put(app, caller, e, "one") for e in emails))
        answers = await asyncio.gather(*(enrich(app, caller, e) for e in emails))
        assert {a["traits"]["tier"] for a in answers} == {"one"}  # type: ignore[index]
        patched = await asyncio.gather(
            *(
                app.http.patch(
                    f"/v1/profiles/email/{e}",
                    content=orjson.dumps({"traits": {"tier": "two"}}),
                    headers={**caller.headers, "Content-Type": "application/merge-patch+json"},
                )
                for e in emails
            )
        )
        assert {r.status_code for r in patched} == {200}
        reads = await asyncio.gather(
            *(app.http.get(f"/v1/profiles/email/{e}", headers=caller.headers) for e in emails)
        )
        assert {r.json()["traits"]["tier"] for r in reads} == {"two"}

    async def test_bulk_events_and_erasure(self, bounced: tuple[RunningApp, Settings]) -> None:
        app, _ = bounced
        caller = await caller_on(app)
        records = [
            {"identifiers": {"email": f"b{n}@example.com"}, "traits": {"tier": "bulk"}}
            for n in range(200)
        ]
        response = await app.http.post("/v1/profiles/bulk", json=records, headers=caller.headers)
        assert response.status_code == 200, response.text
        event = {
            "event_id": f"order-{uuid4().hex}",
            "type": "purchase",
            "identifiers": {"email": "b7@example.com"},
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC).isoformat(),
            "data": {"amount": 10, "currency": "EUR"},
        }
        response = await app.http.post("/v1/events", json=event, headers=caller.headers)
        assert response.status_code in (200, 201, 202), response.text
        answer = await enrich(app, caller, "b7@example.com")
        assert answer["metrics"]["order_count"] == 1  # type: ignore[index]
        gone = "/v1/profiles/email/b7@example.com"
        response = await app.http.delete(gone, headers=caller.headers)
        assert response.status_code == 204, response.text
        assert (await enrich(app, caller, "b7@example.com"))["found"] is False

    async def test_an_import_runs_through_it(
        self, bounced: tuple[RunningApp, Settings], tmp_path: Path
    ) -> None:
        app, settings = bounced
        caller = await caller_on(app)
        path = tmp_path / "guests.ndjson"
        path.write_bytes(
            b"\n".join(
                orjson.dumps({"identifiers": {"email": f"i{n}@example.com"}, "traits": {"n": n}})
                for n in range(500)
            )
        )
        report = await import_file(path, settings, batch_size=100)
        assert (report.created, report.failed) == (500, 0)
        answer = await enrich(app, caller, "i499@example.com")
        assert answer["traits"] == {"n": 499}
