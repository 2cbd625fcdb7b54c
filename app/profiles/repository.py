"""Every SQL statement about profiles and their identifiers."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import ConsentRecord, Event, Identifier, Profile
from app.core.models.base import utcnow
from app.identity.identifiers import Key

# Bound parameters per statement stay far below SQLite's and asyncpg's limits.
CHUNK = 500


def _chunks(keys: Sequence[Key]) -> list[Sequence[Key]]:
    return [keys[i : i + CHUNK] for i in range(0, len(keys), CHUNK)]


class ProfileRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    async def owners(self, keys: Sequence[Key]) -> dict[Key, uuid.UUID]:
        """Which profile owns each of ``keys`` (absent keys are unowned)."""
        owners: dict[Key, uuid.UUID] = {}
        for chunk in _chunks(keys):
            rows = await self.session.execute(
                select(Identifier.type, Identifier.value, Identifier.profile_id).where(
                    tuple_(Identifier.type, Identifier.value).in_(list(chunk))
                )
            )
            owners.update({(t, v): pid for t, v, pid in rows})
        return owners

    async def get(self, profile_id: uuid.UUID, *, lock: bool = False) -> Profile | None:
        """Load a profile; ``lock`` takes its row lock (FOR UPDATE) on PostgreSQL."""
        statement = select(Profile).where(Profile.id == profile_id)
        if lock and self.dialect == "postgresql":
            statement = statement.with_for_update()
        # populate_existing: a locked read must not be answered from the identity map.
        statement = statement.execution_options(populate_existing=True)
        result = await self.session.scalars(statement)
        return result.first()

    async def keys_of(self, profile_id: uuid.UUID) -> list[Key]:
        rows = await self.session.execute(
            select(Identifier.type, Identifier.value)
            .where(Identifier.profile_id == profile_id)
            .order_by(Identifier.type, Identifier.value)
        )
        return [(t, v) for t, v in rows]

    async def create(self, values: dict[str, Any]) -> Profile:
        now = utcnow()
        profile = Profile(id=uuid.uuid4(), created_at=now, updated_at=now, version=1, **values)
        self.session.add(profile)
        await self.session.flush()
        return profile

    async def claim_keys(self, profile_id: uuid.UUID, keys: Sequence[Key]) -> list[Key]:
        """Attach unowned keys to the profile; return the ones it got.

        ON CONFLICT DO NOTHING instead of check-then-insert: a key another transaction takes
        at the same moment is simply not returned (PostgreSQL waits for that transaction to
        finish first), so the caller can re-resolve instead of failing on a unique violation.
        """
        claimed: list[Key] = []
        make = pg_insert if self.dialect == "postgresql" else sqlite_insert
        # Sorted: two transactions inserting overlapping keys wait on each other in the same
        # order instead of deadlocking.
        for chunk in _chunks(sorted(keys)):
            statement = (
                make(Identifier)
                .values([{"type": t, "value": v, "profile_id": profile_id} for t, v in chunk])
                .on_conflict_do_nothing(index_elements=["type", "value"])
                .returning(Identifier.type, Identifier.value)
            )
            rows = await self.session.execute(statement)
            claimed.extend((t, v) for t, v in rows)
        return claimed

    async def release_keys(self, profile_id: uuid.UUID, keys: Sequence[Key]) -> None:
        for chunk in _chunks(keys):
            await self.session.execute(
                delete(Identifier).where(
                    Identifier.profile_id == profile_id,
                    tuple_(Identifier.type, Identifier.value).in_(list(chunk)),
                )
            )

    async def update(self, profile_id: uuid.UUID, values: dict[str, Any]) -> None:
        """Write content and bump the version, in SQL so concurrent bumps are not lost."""
        await self.session.execute(
            update(Profile)
            .where(Profile.id == profile_id)
            .values(**values, updated_at=utcnow(), version=Profile.version + 1)
            .execution_options(synchronize_session=False)
        )

    async def delete(self, profile_id: uuid.UUID) -> None:
        """Erase the profile, its identifiers and its events (in the caller's transaction).

        Identifiers have no foreign key to cascade along (it slowed bulk imports), so they are
        deleted here. The profile goes first: its row lock makes a bulk import that is about to
        add identifiers to it wait, then find it gone and start its batch over, and an import
        that got there first has committed its identifiers before this delete reads them.
        Events still cascade; deleting them here too keeps erasure independent of that.
        """
        for statement in (
            delete(Profile).where(Profile.id == profile_id),
            delete(ConsentRecord).where(ConsentRecord.profile_id == profile_id),
            delete(Identifier).where(Identifier.profile_id == profile_id),
            delete(Event).where(Event.profile_id == profile_id),
        ):
            await self.session.execute(statement.execution_options(synchronize_session=False))

    async def consent_of(self, profile_id: uuid.UUID) -> dict[str, Any] | None:
        """The stored consent, the row locked (FOR UPDATE on PostgreSQL); None: no profile."""
        statement = select(Profile.consent).where(Profile.id == profile_id)
        if self.dialect == "postgresql":
            statement = statement.with_for_update()
        row = (await self.session.execute(statement)).first()
        return None if row is None else dict(row[0] or {})

    async def add_consent_history(
        self, profile_id: uuid.UUID, history: Sequence[dict[str, Any]]
    ) -> None:
        """Append consent changes to the profile's history (in the write's transaction)."""
        if history:
            await self.session.execute(
                insert(ConsentRecord), [{"profile_id": profile_id, **row} for row in history]
            )

    async def consent_history(self, profile_id: uuid.UUID) -> list[ConsentRecord]:
        """Every recorded consent change of the profile, oldest first."""
        rows = await self.session.scalars(
            select(ConsentRecord)
            .where(ConsentRecord.profile_id == profile_id)
            .order_by(ConsentRecord.id)
        )
        return list(rows)
