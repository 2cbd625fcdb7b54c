"""The migrations: they build what the models describe, and the latest one keeps its data.

Each test gets a fresh database of its own (the shared ones are already at head), on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from app.core.db import create_engine
from app.core.migrate import alembic_config, upgrade
from app.core.models import Base
from app.core.settings import Settings
from tests.fixtures.databases import PG_ADMIN_URL, drop_pg_database

# Revocations stop following their client (2026_12_01_1800-revocations_outlive_clients.py).
BEFORE = "b2d4f6a8c0e1"
OUTLIVE = "a1c3e5f7b9d2"


def settings_for(url: str) -> Settings:
    return Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    name = f"enrich_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        yield url
    finally:
        await drop_pg_database(url)


async def migrate(url: str, revision: str, *, down: bool = False) -> None:
    config = alembic_config(settings_for(url))
    if down:
        await asyncio.to_thread(command.downgrade, config, revision)
    else:
        await asyncio.to_thread(upgrade, settings_for(url), revision)


async def run(url: str, *statements: str) -> list[Any]:
    """Run ``statements`` in one transaction; the rows of the last one."""
    engine = create_engine(settings_for(url))
    try:
        async with engine.begin() as conn:
            rows: list[Any] = []
            for statement in statements:
                result = await conn.execute(text(statement))
                rows = list(result) if result.returns_rows else []
            return rows
    finally:
        await engine.dispose()


CLIENT = (
    "INSERT INTO clients (client_id, name, secret_hash, scopes, disabled, created_at) "
    "VALUES ('{id}', 'c', 'sha256$x', 'profiles:read', false, CURRENT_TIMESTAMP)"
)
REVOCATION = (
    "INSERT INTO revoked_tokens (jti, client_id, expires_at, revoked_at) "
    "VALUES ('{jti}', '{id}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
)


class TestMigrations:
    async def test_head_builds_what_the_models_describe(self, empty_database: str) -> None:
        await migrate(empty_database, "head")

        def differences(conn: Connection) -> list[Any]:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))

        engine = create_engine(settings_for(empty_database))
        try:
            async with engine.connect() as conn:
                assert await conn.run_sync(differences) == []
        finally:
            await engine.dispose()

    async def test_revocations_outlive_their_client_and_the_downgrade_drops_orphans(
        self, empty_database: str
    ) -> None:
        url = empty_database
        await migrate(url, BEFORE)
        await run(url, CLIENT.format(id="old"), REVOCATION.format(jti="j1", id="old"))
        await migrate(url, OUTLIVE)
        assert await run(url, "SELECT jti FROM revoked_tokens") == [("j1",)]

        await run(url, "DELETE FROM clients WHERE client_id = 'old'")
        assert await run(url, "SELECT jti, client_id FROM revoked_tokens") == [("j1", "old")]

        # Back down: the constraint returns, so revocations of deleted clients must go.
        await run(url, CLIENT.format(id="kept"), REVOCATION.format(jti="j2", id="kept"))
        await migrate(url, BEFORE, down=True)
        assert await run(url, "SELECT jti FROM revoked_tokens") == [("j2",)]
        await run(url, "DELETE FROM clients WHERE client_id = 'kept'")
        assert await run(url, "SELECT jti FROM revoked_tokens") == []  # cascaded again
        await migrate(url, "head")
