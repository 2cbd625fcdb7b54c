"""The bulk engine's PostgreSQL statements: arrays in, COPY for the new rows.

Every statement takes the whole batch: identifiers are resolved with one join against
``unnest`` of two arrays, new profiles and identifiers arrive by COPY (binary, straight into
the tables), and changed profiles are rewritten by one ``UPDATE ... FROM unnest(...)`` whose
WHERE clause skips rows that would not change, so an unchanged profile keeps its version.
The statements run on the session's own connection, inside the caller's transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.models.base import utcnow
from app.profiles.identity import Key

if TYPE_CHECKING:
    from app.ingest.bulk import Plan, Target

# Races with concurrent writers; the engine retries the batch from its savepoint.
RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.ForeignKeyViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)

PROFILE_COLUMNS = (
    "id",
    "traits",
    "segments",
    "metrics",
    "recommendations",
    "source",
    "order_count",
    "lifetime_value",
    "last_order_at",
    "last_event_at",
    "created_at",
    "updated_at",
    "version",
)

OWNERS = """
SELECT i.type, i.value, i.profile_id
FROM identifiers AS i
JOIN unnest($1::text[], $2::text[]) AS k(type, value) ON i.type = k.type AND i.value = k.value
"""

LOCK = "SELECT id FROM profiles WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"

KEYS_OF = "SELECT type, value FROM identifiers WHERE profile_id = ANY($1::uuid[])"

# An event metric the record does not name keeps its stored value ("*_set" is false).
UPDATE = """
UPDATE profiles AS p SET
    traits = u.traits,
    segments = u.segments,
    metrics = u.metrics,
    recommendations = u.recommendations,
    source = u.source,
    order_count = CASE WHEN u.oc_set THEN u.order_count ELSE p.order_count END,
    lifetime_value = CASE WHEN u.ltv_set THEN u.lifetime_value ELSE p.lifetime_value END,
    last_order_at = CASE WHEN u.loa_set THEN u.last_order_at ELSE p.last_order_at END,
    last_event_at = CASE WHEN u.lea_set THEN u.last_event_at ELSE p.last_event_at END,
    updated_at = $16,
    version = p.version + 1
FROM (
    SELECT id, traits::jsonb AS traits, segments::jsonb AS segments, metrics::jsonb AS metrics,
        recommendations::jsonb AS recommendations, source, oc_set, order_count, ltv_set,
        lifetime_value, loa_set, last_order_at, lea_set, last_event_at, gains_keys
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::bool[], $8::int[], $9::bool[], $10::numeric[], $11::bool[], $12::timestamptz[],
        $13::bool[], $14::timestamptz[], $15::bool[])
        AS t(id, traits, segments, metrics, recommendations, source, oc_set, order_count,
            ltv_set, lifetime_value, loa_set, last_order_at, lea_set, last_event_at,
            gains_keys)
) AS u
WHERE p.id = u.id AND (
    u.gains_keys
    OR p.traits IS DISTINCT FROM u.traits
    OR p.segments IS DISTINCT FROM u.segments
    OR p.metrics IS DISTINCT FROM u.metrics
    OR p.recommendations IS DISTINCT FROM u.recommendations
    OR p.source IS DISTINCT FROM u.source
    OR (u.oc_set AND p.order_count IS DISTINCT FROM u.order_count)
    OR (u.ltv_set AND p.lifetime_value IS DISTINCT FROM u.lifetime_value)
    OR (u.loa_set AND p.last_order_at IS DISTINCT FROM u.last_order_at)
    OR (u.lea_set AND p.last_event_at IS DISTINCT FROM u.last_event_at)
)
RETURNING p.id
"""


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class PgStore:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self.pg = connection

    @classmethod
    async def open(cls, session: AsyncSession) -> PgStore:
        """Use the session's connection (and so its transaction) directly."""
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        return cls(driver)

    async def owners(self, keys: Sequence[Key]) -> dict[Key, uuid.UUID]:
        rows = await self.pg.fetch(OWNERS, [k[0] for k in keys], [k[1] for k in keys])
        return {(t, v): pid for t, v, pid in rows}

    async def lock(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        return {row[0] for row in await self.pg.fetch(LOCK, list(ids))}

    async def keys_of(self, ids: Sequence[uuid.UUID]) -> list[Key]:
        return [(t, v) for t, v in await self.pg.fetch(KEYS_OF, list(ids))]

    async def write(self, plan: Plan) -> set[uuid.UUID]:
        now = utcnow()
        created = plan.created
        if created:
            await self.pg.copy_records_to_table(
                "profiles", records=[_new_row(t, now) for t in created], columns=PROFILE_COLUMNS
            )
        # Sorted keys touch the index in order and keep concurrent loads from deadlocking.
        new_keys = sorted((*key, t.profile_id) for t in plan.targets.values() for key in t.new_keys)
        if new_keys:
            await self.pg.copy_records_to_table(
                "identifiers", records=new_keys, columns=("type", "value", "profile_id")
            )
        existing = plan.existing
        if not existing:
            return set()
        rows = await self.pg.fetch(UPDATE, *_update_arrays(existing), now)
        return {row[0] for row in rows}


def _new_row(target: Target, now: Any) -> tuple[Any, ...]:
    content = target.content
    columns = target.columns
    return (
        target.profile_id,
        dumps(content.traits),
        dumps(content.segments),
        dumps(content.metrics),
        dumps(content.recommendations),
        content.source,
        columns.get("order_count"),
        columns.get("lifetime_value"),
        columns.get("last_order_at"),
        columns.get("last_event_at"),
        now,
        now,
        1,
    )


def _update_arrays(targets: Sequence[Target]) -> list[list[Any]]:
    arrays: list[list[Any]] = [[] for _ in range(15)]
    for target in targets:
        content = target.content
        columns = target.columns
        values = (
            target.profile_id,
            dumps(content.traits),
            dumps(content.segments),
            dumps(content.metrics),
            dumps(content.recommendations),
            content.source,
            "order_count" in columns,
            columns.get("order_count"),
            "lifetime_value" in columns,
            columns.get("lifetime_value"),
            "last_order_at" in columns,
            columns.get("last_order_at"),
            "last_event_at" in columns,
            columns.get("last_event_at"),
            bool(target.new_keys),
        )
        for array, value in zip(arrays, values, strict=True):
            array.append(value)
    return arrays
