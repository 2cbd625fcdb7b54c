"""The upgrade to event ids per client: events processed before it stay duplicates."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from alembic import command

from app.auth.clients import ClientService
from app.core.db import create_engine
from app.core.migrate import alembic_config, upgrade
from app.core.models.base import JSONType
from tests.conftest import BACKENDS, Backend, RunningApp, start_app
from tests.events.test_router import purchase
from tests.fixtures.databases import create_pg_database, create_sqlite_database, drop_pg_database

BEFORE = "9e4f2c6d8a13"  # the revision before event ids were scoped per client
NOW = datetime(2026, 11, 30, tzinfo=UTC)
PROFILE = uuid.uuid4()

profiles = sa.table(
    "profiles",
    sa.column("id", sa.Uuid),
    sa.column("traits", JSONType),
    sa.column("segments", JSONType),
    sa.column("metrics", JSONType),
    sa.column("recommendations", JSONType),
    sa.column("order_count", sa.Integer),
    sa.column("lifetime_value", sa.Numeric(20, 4)),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)),
    sa.column("version", sa.Integer),
)
identifiers = sa.table(
    "identifiers", sa.column("type"), sa.column("value"), sa.column("profile_id", sa.Uuid)
)
events = sa.table(
    "events",
    sa.column("event_id"),
    sa.column("profile_id", sa.Uuid),
    sa.column("type"),
    sa.column("occurred_at", sa.DateTime(timezone=True)),
    sa.column("received_at", sa.DateTime(timezone=True)),
    sa.column("data", JSONType),
)
processed = sa.table(
    "processed_events", sa.column("event_id"), sa.column("received_at", sa.DateTime(timezone=True))
)


@pytest.fixture(params=BACKENDS)
async def old_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A database of its own at the revision before this change, holding processed events:
    ``old-1`` (its profile still there) and ``old-2`` (its profile erased)."""
    if request.param == "postgres":
        backend = Backend("postgres", await create_pg_database(BEFORE), None, "unused:")
    else:
        backend = Backend("sqlite", await create_sqlite_database(tmp_path, BEFORE), None, "unused:")
    engine = create_engine(backend.settings())
    try:
        async with engine.begin() as conn:
            await conn.execute(
                profiles.insert().values(
                    id=PROFILE,
                    traits={},
                    segments=[],
                    metrics={},
                    recommendations=[],
                    order_count=1,
                    lifetime_value=10,
                    created_at=NOW,
                    updated_at=NOW,
                    version=2,
                )
            )
            await conn.execute(
                identifiers.insert().values(type="guest_ref", value="g-1", profile_id=PROFILE)
            )
            await conn.execute(
                events.insert().values(
                    event_id="old-1",
                    profile_id=PROFILE,
                    type="purchase",
                    occurred_at=NOW,
                    received_at=NOW,
                    data={"amount": "10.00"},
                )
            )
            await conn.execute(
                processed.insert(),
                [{"event_id": i, "received_at": NOW} for i in ("old-1", "old-2")],
            )
    finally:
        await engine.dispose()
    await asyncio.to_thread(upgrade, backend.settings())
    yield backend
    if backend.name == "postgres":
        await drop_pg_database(backend.database_url)


async def events_client(running: RunningApp) -> dict[str, str]:
    async with running.runtime.sessionmaker() as session:
        client, secret = await ClientService(session).create("old", "profiles:read events:write")
        await session.commit()
    response = await running.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, secret)
    )
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def order_count(http: httpx.AsyncClient, headers: dict[str, str]) -> int:
    response = await http.get("/v1/profiles/guest_ref/g-1", headers=headers)
    count: int = response.json()["metrics"]["order_count"]
    return count


class TestUpgrade:
    async def test_events_processed_before_stay_duplicates_for_every_client(
        self, old_database: Backend
    ) -> None:
        async for running in start_app(old_database.settings()):
            http = running.http
            for _ in range(2):  # two clients, neither of which sent them (ids were global)
                headers = await events_client(running)
                for event_id in ("old-1", "old-2"):
                    event = purchase(event_id, "99.00")  # the body sent then is unknown
                    response = await http.post("/v1/events", json=event, headers=headers)
                    assert response.status_code == 200, response.text
                    # Which profile it went to is not told: the client may not have sent it.
                    assert response.json()["profile_id"] is None
                    assert response.json()["duplicate"] is True
            assert await order_count(http, headers) == 1
            new = await http.post("/v1/events", json=purchase("new-1"), headers=headers)
            assert new.status_code == 202
            assert new.json()["profile_id"] == str(PROFILE)
            assert await order_count(http, headers) == 2

    async def test_downgrade_keeps_one_row_per_event_id_and_upgrades_again(
        self, old_database: Backend
    ) -> None:
        async for running in start_app(old_database.settings()):
            for _ in range(2):
                headers = await events_client(running)
                response = await running.http.post(
                    "/v1/events", json=purchase("shared"), headers=headers
                )
                assert response.status_code == 202
        config = alembic_config(old_database.settings())
        await asyncio.to_thread(command.downgrade, config, BEFORE)
        engine = create_engine(old_database.settings())
        try:
            async with engine.connect() as conn:
                rows = await conn.execute(sa.select(processed.c.event_id))
                assert sorted(row.event_id for row in rows) == ["old-1", "old-2", "shared"]
                rows = await conn.execute(sa.select(events.c.event_id))
                assert sorted(row.event_id for row in rows) == ["old-1", "shared"]
        finally:
            await engine.dispose()
        await asyncio.to_thread(upgrade, old_database.settings())
