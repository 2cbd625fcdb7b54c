"""The bulk engine's SQLite statements: chunked lookups and executemany writes.

SQLite has one writer at a time and no COPY; a batch is a few ``IN`` lookups and one
executemany per table. Whether a profile changes is decided in Python with the same rule the
PUT uses (``documents.differs``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row, Table, bindparam, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Identifier, Profile
from app.core.models.base import utcnow
from app.identity.identifiers import Key
from app.profiles.bulk.pg import EncodedProfile
from app.profiles.bulk.plan import Plan
from app.profiles.documents import PreparedProfile, differs
from app.profiles.schemas import EVENT_METRICS

# Far below SQLite's limit on bound parameters per statement.
CHUNK = 400

profiles: Table = Profile.__table__  # type: ignore[assignment]
identifiers: Table = Identifier.__table__  # type: ignore[assignment]


class SqliteStore:
    refused: tuple[type[Exception], ...] = ()  # no savepoint to return to (see Store)

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.stored: dict[uuid.UUID, Row[Any]] = {}

    def check_transaction(self) -> None:
        """SQLAlchemy runs every statement here, inside the session's transaction."""

    def serialize(self, records: Sequence[tuple[int, PreparedProfile]]) -> None:
        """Nothing to do ahead: SQLAlchemy serializes the JSON columns itself."""
        if any(isinstance(record, EncodedProfile) for _, record in records):
            raise TypeError("JSON-encoded records are for the PostgreSQL store only")

    async def owners(self, keys: Sequence[Key]) -> dict[Key, uuid.UUID]:
        found: dict[Key, uuid.UUID] = {}
        for start in range(0, len(keys), CHUNK):
            chunk = list(keys[start : start + CHUNK])
            rows = await self.session.execute(
                select(identifiers.c.type, identifiers.c.value, identifiers.c.profile_id).where(
                    tuple_(identifiers.c.type, identifiers.c.value).in_(chunk)
                )
            )
            found.update({(t, v): pid for t, v, pid in rows})
        return found

    async def lock(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        # The write that follows takes SQLite's database lock; here we only read the rows.
        self.stored = {}
        for start in range(0, len(ids), CHUNK):
            rows = await self.session.execute(
                select(profiles).where(profiles.c.id.in_(list(ids[start : start + CHUNK])))
            )
            self.stored.update({row.id: row for row in rows})
        return set(self.stored)

    async def keys_of(self, ids: Sequence[uuid.UUID]) -> list[Key]:
        keys: list[Key] = []
        for start in range(0, len(ids), CHUNK):
            rows = await self.session.execute(
                select(identifiers.c.type, identifiers.c.value).where(
                    identifiers.c.profile_id.in_(list(ids[start : start + CHUNK]))
                )
            )
            keys.extend((t, v) for t, v in rows)
        return keys

    async def write(self, plan: Plan) -> set[uuid.UUID]:
        now = utcnow()
        created = [
            {
                "id": t.profile_id,
                **t.content.content(),
                **{name: t.columns.get(name) for name in EVENT_METRICS},
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            for t in plan.created
        ]
        if created:
            await self.session.execute(insert(profiles), created)
        new_keys = [
            {"type": key[0], "value": key[1], "profile_id": t.profile_id}
            for t in plan.targets.values()
            for key in t.new_keys
        ]
        if new_keys:
            await self.session.execute(insert(identifiers), new_keys)
        changes: list[dict[str, Any]] = []
        for target in plan.existing:
            stored = self.stored[target.profile_id]
            final = target.final
            if not target.new_keys and not differs(stored, final):  # type: ignore[arg-type]
                continue
            columns = {name: getattr(stored, name) for name in EVENT_METRICS} | final.columns
            changes.append({"target": target.profile_id, **final.content(), **columns})
        if changes:
            statement = (
                update(profiles)
                .where(profiles.c.id == bindparam("target"))
                .values(updated_at=now, version=profiles.c.version + 1)
            )
            await self.session.execute(statement, changes)
        return {change["target"] for change in changes}
