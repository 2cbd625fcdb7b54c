"""Every SQL statement about events: the idempotency ledger, the event log, the metrics."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, Numeric, exists, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import GenericFunction

from app.core.models import Event, ProcessedEvent, Profile
from app.core.models.profiles import ANY_CLIENT
from app.profiles.schemas import MAX_MONEY

# The most the metric columns hold as the API documents them: INTEGER, and 1e14 (NUMERIC(20, 4)
# would hold 1e16 on PostgreSQL, then fail the UPDATE; SQLite's REAL would just go on).
MAX_ORDER_COUNT = 2**31 - 1
MAX_LIFETIME_VALUE = Decimal(int(MAX_MONEY))


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

    async def claim(
        self, client_id: str, event_id: str, digest: str, received_at: datetime
    ) -> bool:
        """Record the client's ``event_id`` as processed; False when it already was (by this
        client, or by anyone before ids were per client).

        One INSERT ... SELECT ... WHERE NOT EXISTS ... ON CONFLICT DO NOTHING RETURNING: the
        unique key decides, so two deliveries of one event at the same moment cannot both pass
        (PostgreSQL makes the second wait for the first to commit or roll back).
        """
        make = pg_insert if self.dialect == "postgresql" else sqlite_insert
        columns = ProcessedEvent.__table__.c
        legacy = select(ProcessedEvent.event_id).where(
            ProcessedEvent.client_id == ANY_CLIENT, ProcessedEvent.event_id == event_id
        )
        row = select(
            literal(client_id, columns.client_id.type),
            literal(event_id, columns.event_id.type),
            literal(digest, columns.digest.type),
            literal(received_at, columns.received_at.type),
        ).where(~exists(legacy))
        statement = (
            make(ProcessedEvent)
            .from_select(["client_id", "event_id", "digest", "received_at"], row)
            .on_conflict_do_nothing(index_elements=["client_id", "event_id"])
            .returning(ProcessedEvent.event_id)
        )
        return (await self.session.execute(statement)).first() is not None

    async def earlier(self, client_id: str, event_id: str) -> dict[str, str | None]:
        """The digests ``event_id`` was processed with, by the client that processed it: this
        client or ANY_CLIENT (before ids were per client)."""
        result = await self.session.execute(
            select(ProcessedEvent.client_id, ProcessedEvent.digest).where(
                ProcessedEvent.client_id.in_([client_id, ANY_CLIENT]),
                ProcessedEvent.event_id == event_id,
            )
        )
        return {row.client_id: row.digest for row in result}

    async def profile_of(self, client_id: str, event_id: str) -> uuid.UUID | None:
        """The profile the client's earlier delivery of ``event_id`` went to (None once erased)."""
        result = await self.session.execute(
            select(Event.profile_id).where(Event.client_id == client_id, Event.event_id == event_id)
        )
        return result.scalar_one_or_none()

    async def totals(self, profile_id: uuid.UUID) -> tuple[int, Decimal] | None:
        """The profile's order_count and lifetime_value (0 for none); None if it is gone."""
        result = await self.session.execute(
            select(
                func.coalesce(Profile.order_count, 0), func.coalesce(Profile.lifetime_value, 0)
            ).where(Profile.id == profile_id)
        )
        row = result.first()
        return None if row is None else (int(row[0]), Decimal(str(row[1])))

    async def apply(
        self, profile_id: uuid.UUID, occurred_at: datetime, amount: Decimal | None, now: datetime
    ) -> bool:
        """Move the profile's event metrics in one UPDATE; False if the profile is gone, or if
        a purchase would take order_count or lifetime_value past what they hold (``totals``
        tells which).

        The arithmetic and the bounds run in SQL on the row as it is when the row lock is
        taken, so concurrent purchases all count (no read-modify-write in Python), and none
        slips past a bound.
        """
        values: dict[str, Any] = {
            "last_event_at": _later(Profile.last_event_at, occurred_at),
            "updated_at": now,
            "version": Profile.version + 1,
        }
        bounds: list[Any] = []
        if amount is not None:
            count = func.coalesce(Profile.order_count, 0)
            total = func.coalesce(Profile.lifetime_value, 0) + literal(amount, Numeric(20, 4))
            values["order_count"] = count + 1
            values["lifetime_value"] = total
            values["last_order_at"] = _later(Profile.last_order_at, occurred_at)
            bounds = [
                count < MAX_ORDER_COUNT,
                total <= literal(MAX_LIFETIME_VALUE, Numeric(20, 4)),
            ]
        statement = (
            update(Profile)
            .where(Profile.id == profile_id, *bounds)
            .values(**values)
            .returning(Profile.id)
            .execution_options(synchronize_session=False)
        )
        return (await self.session.execute(statement)).first() is not None

    async def add(self, event: Event) -> None:
        self.session.add(event)
        await self.session.flush()
