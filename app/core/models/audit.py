"""The audit log: who changed clients, keys or erased profiles, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models.base import Base, BigIntPK, JSONType, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # "cli:<os user>" for the command line, "client:<client_id>" for an API caller.
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(200), default=None)
    # What changed (never a secret); identifiers only as a hash.
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
