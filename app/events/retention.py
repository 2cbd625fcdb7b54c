"""Event retention: old events deleted in small batches, by hand (`enrich purge`) or on a
schedule (``ENRICH_EVENTS_RETENTION_DAYS``).

Each batch is its own short transaction, so traffic never waits behind a purge: event writes
touch new rows, and on PostgreSQL the batch takes only rows nobody holds (``SKIP LOCKED``), so
two workers purging at once, or an erasure deleting the same guest's events, never block each
other. What the events did to a profile (its metrics) stays; so does the ledger of processed
event ids (``processed_events``: ids and digests, no content), which keeps a retried old event
a duplicate.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.log import EVENTS_PURGED, AuditLog
from app.core.models import Event
from app.core.settings import Settings

log = structlog.get_logger(__name__)

BATCH = 1000


async def purge_batch(session: AsyncSession, before: datetime, batch: int) -> int:
    """Delete up to ``batch`` events received before ``before``; return how many."""
    oldest = (
        select(Event.client_id, Event.event_id)
        .where(Event.received_at < before)
        .order_by(Event.received_at)
        .limit(batch)
    )
    if session.get_bind().dialect.name == "postgresql":
        oldest = oldest.with_for_update(skip_locked=True)
    result = await session.execute(
        delete(Event)
        .where(tuple_(Event.client_id, Event.event_id).in_(oldest))
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def purge_events(
    sessionmaker: async_sessionmaker[AsyncSession],
    before: datetime,
    *,
    batch: int = BATCH,
    actor: str | None = None,
    pause: float = 0.0,
) -> int:
    """Delete every event received before ``before``, ``batch`` at a time, each batch committed
    alone (``pause`` seconds between batches leaves the database to traffic); return how many.
    The audit records that a purge happened, the cut-off and the count, never an event (as
    ``actor``, else the command line's user or "system")."""
    total = 0
    while True:
        async with sessionmaker() as session, session.begin():
            deleted = await purge_batch(session, before, batch)
        total += deleted
        if deleted < batch:
            break
        if pause:
            await asyncio.sleep(pause)
    if total:
        async with sessionmaker() as session, session.begin():
            await AuditLog(session, actor).record(
                EVENTS_PURGED, None, before=before.isoformat(), events=total
            )
    return total


async def _every(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    interval = settings.events_purge_interval_seconds
    age = timedelta(days=settings.events_retention_days)
    # Workers (and hosts) started together spread their first purge over the interval.
    await asyncio.sleep(random.uniform(0, interval))
    while True:
        try:
            purged = await purge_events(sessionmaker, datetime.now(UTC) - age, pause=0.05)
            if purged:
                log.info("events.purged", events=purged, older_than_days=age.days)
        except Exception as exc:  # the next round tries again; the service goes on
            log.warning("events.purge_failed", error=type(exc).__name__)
        await asyncio.sleep(interval)


@asynccontextmanager
async def open_retention(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[None]:
    """The scheduled purge, in every worker when ``events_retention_days`` is set (they share
    the work: SKIP LOCKED), stopped with the worker."""
    if not settings.events_retention_days:
        yield
        return
    task = asyncio.create_task(_every(settings, sessionmaker), name="events-retention")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
