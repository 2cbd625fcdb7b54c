"""The audit log: client, key and view administration and profile erasures, never a secret.

Entries are written in the transaction of the change they record, so an entry exists exactly
when its change was committed.
"""

from __future__ import annotations

import getpass
import os
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import AuditEvent
from app.core.models.base import utcnow
from app.platform.logging import correlation_id_var, request_id_var

CLIENT_CREATED = "client.created"
CLIENT_ROTATED = "client.rotated"
CLIENT_CERTIFIED = "client.certified"
CLIENT_DISABLED = "client.disabled"
CLIENT_DELETED = "client.deleted"
CLIENT_LIMITED = "client.limited"
CLIENT_ALLOWLISTED = "client.allowlisted"
KEY_ROTATED = "key.rotated"
PROFILE_ERASED = "profile.erased"
PROFILE_EXPORTED = "profile.exported"
EVENTS_PURGED = "events.purged"
VIEW_CREATED = "view.created"
VIEW_RETIRED = "view.retired"
CLIENT_VIEW_SET = "client.view_set"
CLIENT_PURPOSE_SET = "client.purpose_set"

# Who made a change when nobody said (a script calling the services directly); the command
# line sets ``current_actor`` to the person running it.
SYSTEM = "system"
current_actor: ContextVar[str] = ContextVar("audit_actor", default=SYSTEM)


def cli_actor() -> str:
    """The person at the command line, as the operating system knows them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"cli:{user}"


def client_actor(client_id: str) -> str:
    return f"client:{client_id}"


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self, actor: str, action: str, target: str | None, details: dict[str, Any]
    ) -> None:
        self.session.add(
            AuditEvent(at=utcnow(), actor=actor, action=action, target=target, details=details)
        )
        await self.session.flush()

    async def since(self, since: datetime | None, limit: int) -> list[AuditEvent]:
        """The newest ``limit`` entries at or after ``since``, oldest first."""
        query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        if since is not None:
            query = query.where(AuditEvent.at >= since)
        rows = list(await self.session.scalars(query.limit(limit)))
        rows.reverse()
        return rows


class AuditLog:
    """Record and list audit entries."""

    def __init__(self, session: AsyncSession, actor: str | None = None) -> None:
        self.repo = AuditRepository(session)
        self.actor = actor or current_actor.get()

    async def record(self, action: str, target: str | None = None, **details: Any) -> None:
        """Record a change; one made by a request names its request id and the caller's
        correlation id (Personalize's X-Correlation-Id), so it can be matched to the access
        line and to the caller's own logs."""
        request_id = request_id_var.get()
        if request_id:
            details.setdefault("request_id", request_id)
        correlation_id = correlation_id_var.get()
        if correlation_id:
            details.setdefault("correlation_id", correlation_id)
        await self.repo.add(self.actor, action, target, details)

    async def list(self, since: datetime | None = None, limit: int = 1000) -> list[AuditEvent]:
        return await self.repo.since(since, limit)
