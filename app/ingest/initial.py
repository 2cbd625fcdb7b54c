"""The initial load: an import into an empty identifiers table, in one transaction.

Keeping the identifiers' two indexes up to date row by row is most of the database's work in
a large import (each key lands on a random page of the primary key); building them once at the
end, from sorted input, costs a fraction of that. So when ``enrich import`` finds no identifier
at all, it locks the table (ACCESS EXCLUSIVE: other writers and readers of identifiers wait
until the load commits; the lock is asked for only after an unlocked look found the table
empty, and given up after LOCK_WAIT_SECONDS if someone holds it), drops both indexes, loads every
batch in the one transaction and rebuilds the indexes before committing. A failure rolls
everything back, indexes included; running the file again loads it (imports are idempotent).

Without the indexes a key cannot be looked up, so batches look up only keys the file has
written before (SeenKeys), and the first batch that needs one rebuilds the indexes right then;
the rest of the file loads as an ordinary import would, still in the one transaction.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.ingest.readers import Item
from app.profiles.bulk.plan import BulkResult
from app.profiles.bulk.upsert import SeenKeys, upsert_prepared

# The names the migrations give them (migrations/versions/2026_11_28_1645-initial_schema.py).
PRIMARY_KEY = "pk_identifiers"
PROFILE_INDEX = "ix_identifiers_profile_id"
EXISTS = text("SELECT EXISTS (SELECT 1 FROM identifiers)")
LOCK_WAIT_SECONDS = 2  # how long the initial load waits for the table before giving up the route


class InitialLoad:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.seen = SeenKeys()
        self.indexed = False

    @classmethod
    async def start(cls, sessions: async_sessionmaker[AsyncSession]) -> InitialLoad | None:
        """Lock and unindex an empty identifiers table; None (nothing held) if it has rows."""
        session = sessions()
        try:
            # The import reports only after this transaction commits; a crash loses nothing
            # that running the file again would not restore.
            await session.execute(text("SET LOCAL synchronous_commit = off"))
            await session.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
            if not await _lock_if_empty(session):
                await _give_up(session)
                return None
            await session.execute(text(f"ALTER TABLE identifiers DROP CONSTRAINT {PRIMARY_KEY}"))
            await session.execute(text(f"DROP INDEX {PROFILE_INDEX}"))
        except BaseException:
            await _give_up(session)
            raise
        return cls(session)

    async def load(self, items: list[Item]) -> BulkResult:
        return await upsert_prepared(
            self.session, items, seen=self.seen, before_lookup=self.rebuild
        )

    async def rebuild(self) -> None:
        """Put the indexes back (once): at the end, or when a key must be looked up."""
        if self.indexed:
            return
        await self.session.execute(
            text(f"ALTER TABLE identifiers ADD CONSTRAINT {PRIMARY_KEY} PRIMARY KEY (type, value)")
        )
        await self.session.execute(
            text(f"CREATE INDEX {PROFILE_INDEX} ON identifiers (profile_id)")
        )
        self.indexed = True

    async def commit(self) -> None:
        try:
            await self.rebuild()
            await self.session.commit()
        finally:
            await self.session.close()

    async def abandon(self) -> None:
        await self.session.rollback()
        await self.session.close()


async def _lock_if_empty(session: AsyncSession) -> bool:
    """Take the identifiers table if it is empty; False (the lock not held) if not, or busy.

    Look before locking: an import into a database in use must not queue an exclusive lock,
    which every enrich lookup would then wait behind.
    """
    if await session.scalar(EXISTS):
        return False
    await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'"))
    try:
        await session.execute(text("LOCK TABLE identifiers IN ACCESS EXCLUSIVE MODE"))
    except DBAPIError:  # busy after all: load the ordinary way
        return False
    await session.execute(text("SET LOCAL lock_timeout = 0"))
    return not await session.scalar(EXISTS)  # written to between the look and the lock


async def _give_up(session: AsyncSession) -> None:
    """Release whatever the session holds (the ordinary import route takes over)."""
    await session.rollback()
    await session.close()
