"""Cached enrich answers are dropped after every profile write, before the write is answered.

Writes take ``WriteDep`` instead of ``SessionDep``: a function-scoped dependency whose exit runs
when the endpoint returns and before FastAPI sends the response. It commits, then deletes the
cache entries of every identifier the write touched. Invalidating only after the commit matters:
a reader that refills the cache between an early invalidation and the commit would store the old
profile again. A failed commit raises before anything is invalidated or answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Annotated

import structlog
from fastapi import Depends
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.dependencies import RuntimeDep
from app.exceptions import ServiceUnavailableError
from app.profiles.identity import Key
from app.state import Runtime

log = structlog.get_logger(__name__)

# Redis DEL takes many keys at once; bound each call so one huge bulk load is a few calls.
DELETE_BATCH = 1000


def enrich_cache_key(key: Key) -> str:
    """Where the enrich answer for one identifier is cached."""
    return f"enrich:id:{key[0]}:{key[1]}"


async def invalidate_profile_keys(runtime: Runtime, keys: Iterable[Key]) -> None:
    """Drop the cached enrich answers of ``keys``; call it after the write has committed.

    When the cache cannot be reached the write is already saved, but another worker could go
    on answering from the old entry; the caller gets 503 and retries (every write is
    idempotent), rather than a success that is not yet visible everywhere.
    """
    names = sorted({enrich_cache_key(key) for key in keys})
    try:
        for start in range(0, len(names), DELETE_BATCH):
            await runtime.cache.delete(*names[start : start + DELETE_BATCH])
    except Exception as exc:
        log.warning("cache.invalidate_failed", keys=len(names), error=type(exc).__name__)
        raise ServiceUnavailableError(
            "the write was saved but cached answers could not be refreshed; retry the request"
        ) from exc


@dataclass
class ProfileWrite:
    """A write transaction and the identifier keys whose cached answers it makes stale."""

    session: AsyncSession
    keys: set[Key] = field(default_factory=set)

    def touched(self, keys: Iterable[Key]) -> None:
        self.keys.update(keys)


async def profile_write(runtime: RuntimeDep) -> AsyncIterator[ProfileWrite]:
    """One write: commit, then invalidate the touched keys, then FastAPI sends the answer."""
    async with runtime.sessionmaker() as session:
        write = ProfileWrite(session)
        try:
            if runtime.settings.is_sqlite:
                # Take SQLite's write lock up front: writers then queue (busy_timeout) instead
                # of reading a snapshot that a concurrent writer invalidates.
                await session.execute(text("BEGIN IMMEDIATE"))
            yield write
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
    if write.keys:
        await invalidate_profile_keys(runtime, write.keys)


# scope="function": FastAPI runs the exit code before the response is sent, not after it.
WriteDep = Annotated[ProfileWrite, Depends(profile_write, scope="function")]
