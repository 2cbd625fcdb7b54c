"""Sessions on each backend and what the profile tables hold, for the tests of the profile
storage (the repository, the bulk engine) and of what loads through it (tests/ingest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import create_engine, create_sessionmaker
from app.core.models import Identifier, Profile
from tests.conftest import Backend

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def sessions(backend: Backend) -> AsyncIterator[Sessions]:
    """A session factory on each backend."""
    engine = create_engine(backend.settings())
    try:
        yield create_sessionmaker(engine)
    finally:
        await engine.dispose()


def person(i: int, **extra: Any) -> dict[str, Any]:
    """Profile document number ``i``: an email, a CRM id, a trait and two metrics."""
    return {
        "identifiers": {"email": f"p{i}@example.com", "crm_id": f"C-{i}"},
        "traits": {"n": i},
        "metrics": {"order_count": i, "last_order_at": "2026-10-01T12:00:00Z"},
        **extra,
    }


async def stored_profiles(sessions: Sessions) -> dict[str, dict[str, Any]]:
    """Every profile keyed by its sorted "type:value" identifiers joined with spaces."""
    async with sessions() as session:
        profiles = {p.id: p for p in await session.scalars(select(Profile))}
        keys: dict[Any, list[str]] = {}
        for row in await session.execute(select(Identifier)):
            ident = row[0]
            keys.setdefault(ident.profile_id, []).append(f"{ident.type}:{ident.value}")
    result: dict[str, dict[str, Any]] = {}
    for profile_id, profile in profiles.items():
        name = " ".join(sorted(keys.get(profile_id, [])))
        result[name] = {
            "id": profile_id,
            "traits": profile.traits,
            "segments": profile.segments,
            "metrics": profile.metrics,
            "recommendations": profile.recommendations,
            "source": profile.source,
            "order_count": profile.order_count,
            "lifetime_value": profile.lifetime_value,
            "last_order_at": profile.last_order_at,
            "version": profile.version,
            "updated_at": profile.updated_at,
        }
    return result
