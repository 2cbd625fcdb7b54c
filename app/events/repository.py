"""Every SQL statement about events: the idempotency ledger, the event log, the metrics."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Numeric, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction

from app.models import Event, ProcessedEvent, Profile


class greatest(GenericFunction[Any]):
    """GREATEST on PostgreSQL, the two-argument MAX on SQLite."""

    name = "greatest"
    inherit_cache = True


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


def _later(column: Any, moment: datetime) -> Any:
    """The later of a nullable timestamp column and ``moment`` (SQLite's max() is NULL-unsafe)."""
    value = literal(moment, DateTime(timezone=True))
    return greatest(func.coalesce(column, value), value)


class EventRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    async def claim(self, event_id: str, received_at: datetime) -> bool:
        """Record ``event_id`` as processed; False when it already was.

        INSERT ... ON CONFLICT DO NOTHING RETURNING: the unique key decides, so two deliveries
        of one event at the same moment cannot both pass (PostgreSQL makes the second wait
        for the first to commit or roll back).
        """
        make = pg_insert if self.dialect == "postgresql" else sqlite_insert
        statement = (
            make(ProcessedEvent)
            .values(event_id=event_id, received_at=received_at)
            .on_conflict_do_nothing(index_elements=["event_id"])
            .returning(ProcessedEvent.event_id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def profile_of(self, event_id: str) -> uuid.UUID | None:
        """The profile an earlier delivery of ``event_id`` went to (None once erased)."""
        result = await self.session.execute(
            select(Event.profile_id).where(Event.event_id == event_id)
        )
        return result.scalar_one_or_none()

    async def apply(
        self, profile_id: uuid.UUID, occurred_at: datetime, amount: Decimal | None, now: datetime
    ) -> bool:
        """Move the profile's event metrics in one UPDATE; False if the profile is gone.

        The arithmetic runs in SQL on the row as it is when the row lock is taken, so
        concurrent purchases all count (no read-modify-write in Python).
        """
        values: dict[str, Any] = {
            "last_event_at": _later(Profile.last_event_at, occurred_at),
            "updated_at": now,
            "version": Profile.version + 1,
        }
        if amount is not None:
            values["order_count"] = func.coalesce(Profile.order_count, 0) + 1
            values["lifetime_value"] = func.coalesce(Profile.lifetime_value, 0) + literal(
                amount, Numeric(20, 4)
            )
            values["last_order_at"] = _later(Profile.last_order_at, occurred_at)
        statement = (
            update(Profile)
            .where(Profile.id == profile_id)
            .values(**values)
            .returning(Profile.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(statement)).first() is not None

    async def add(self, event: Event) -> None:
        self.session.add(event)
        await self.session.flush()
