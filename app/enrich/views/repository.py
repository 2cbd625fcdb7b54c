"""Every SQL statement about views and the clients' default views."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import Client, ViewVersion
from app.core.models.base import utcnow

# (name, version, definition, retired)
Row = tuple[str, int, dict[str, Any] | None, bool]


class ViewRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def fingerprint(self) -> tuple[int, int, int]:
        """Rows, the highest id and retired rows: a new version or a retirement changes one
        (rows are never deleted, ``retired_at`` is set once)."""
        row = (
            await self.session.execute(
                select(func.count(), func.coalesce(func.max(ViewVersion.id), 0)).add_columns(
                    func.count(ViewVersion.retired_at)
                )
            )
        ).one()
        return int(row[0]), int(row[1]), int(row[2])

    async def rows(self) -> list[Row]:
        """Every version, newest first; a retired one without its definition."""
        result = await self.session.execute(
            select(
                ViewVersion.name,
                ViewVersion.version,
                ViewVersion.definition,
                ViewVersion.retired_at,
            ).order_by(ViewVersion.version.desc(), ViewVersion.name)
        )
        return [
            (name, version, None if retired else definition, retired is not None)
            for name, version, definition, retired in result
        ]

    async def versions(self, name: str) -> list[ViewVersion]:
        query = select(ViewVersion).where(ViewVersion.name == name)
        return list(await self.session.scalars(query.order_by(ViewVersion.version)))

    async def all(self) -> list[ViewVersion]:
        query = select(ViewVersion).order_by(ViewVersion.name, ViewVersion.version)
        return list(await self.session.scalars(query))

    async def live_count(self) -> int:
        query = select(func.count()).where(ViewVersion.retired_at.is_(None))
        return int(await self.session.scalar(query) or 0)

    async def add(self, name: str, version: int, definition: dict[str, Any]) -> ViewVersion:
        row = ViewVersion(name=name, version=version, definition=definition)
        self.session.add(row)
        await self.session.flush()
        return row

    async def retire(self, name: str, versions: Sequence[int]) -> None:
        await self.session.execute(
            update(ViewVersion)
            .where(
                ViewVersion.name == name,
                ViewVersion.version.in_(versions),
                ViewVersion.retired_at.is_(None),
            )
            .values(retired_at=utcnow())
        )

    async def client_defaults(self) -> list[tuple[str, str | None, str | None]]:
        """(client_id, view reference, purpose) of every client with a default view or a
        default consent purpose."""
        result = await self.session.execute(
            select(Client.client_id, Client.default_view, Client.default_purpose).where(
                or_(Client.default_view.is_not(None), Client.default_purpose.is_not(None))
            )
        )
        return [(client_id, ref, purpose) for client_id, ref, purpose in result]
