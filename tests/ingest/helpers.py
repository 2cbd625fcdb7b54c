"""Reading back what the engine stored, for assertions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.models import Identifier, Profile


async def stored_profiles(
    sessions: async_sessionmaker[AsyncSession],
) -> dict[str, dict[str, Any]]:
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
