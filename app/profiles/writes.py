"""Cached enrich answers are dropped after every profile write, before the write is answered.

Writes take ``WriteDep`` instead of ``SessionDep``: a function-scoped dependency whose exit runs
when the endpoint returns and before FastAPI sends the response. It commits, then drops the
cached answers of every identifier the write touched (L1 in every process, L2 in Redis).
Invalidating only after the commit matters: a reader that refills the cache between an early
invalidation and the commit would store the old profile again. With read replicas the
invalidation also carries the commit's WAL position, so no process reads the written keys from
a replica that has not replayed it (``app.core.replicas``). A failed commit raises before
anything is invalidated or answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import SessionMaker
from app.core.parts import part
from app.core.replicas import commit_lsn
from app.core.settings import SettingsDep
from app.identity.identifiers import Key


class Invalidation:
    """Where a committed write sends the keys it touched: the enrich cache drops their answers.

    Profiles know only this; the runtime connects it to the cache, so profiles never import
    enrich. If Redis cannot take it now, the write still stands and is answered: the cache
    retries in the background, and meanwhile the processes that cannot hear invalidations
    serve nothing from their L1 (see EnrichCache).
    """

    def __init__(self, drop: Callable[[Iterable[Key], int | None], Awaitable[None]]) -> None:
        self.drop = drop

    async def __call__(self, keys: Iterable[Key], lsn: int | None = None) -> None:
        """``lsn``: the write's commit position in the WAL, when there are read replicas."""
        await self.drop(keys, lsn)


@dataclass
class ProfileWrite:
    """A write transaction and the identifier keys whose cached answers it makes stale."""

    session: AsyncSession
    keys: set[Key] = field(default_factory=set)

    def touched(self, keys: Iterable[Key]) -> None:
        self.keys.update(keys)


async def profile_write(
    sessionmaker: Annotated[SessionMaker, Depends(part(async_sessionmaker))],
    settings: SettingsDep,
    invalidate: Annotated[Invalidation, Depends(part(Invalidation))],
) -> AsyncIterator[ProfileWrite]:
    """One write: commit, then invalidate the touched keys, then FastAPI sends the answer."""
    async with sessionmaker() as session:
        write = ProfileWrite(session)
        try:
            if settings.is_sqlite:
                # Take SQLite's write lock up front: writers then queue (busy_timeout) instead
                # of reading a snapshot that a concurrent writer invalidates.
                await session.execute(text("BEGIN IMMEDIATE"))
            yield write
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        lsn = None
        if write.keys and settings.replica_urls:
            # Read after the commit returned: at or past the commit's record.
            lsn = await commit_lsn(session)
    if write.keys:
        await invalidate(write.keys, lsn)


# scope="function": FastAPI runs the exit code before the response is sent, not after it.
WriteDep = Annotated[ProfileWrite, Depends(profile_write, scope="function")]
