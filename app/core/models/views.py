"""Views: named, versioned selections of answer fields (``enrich views``).

A row is one version of a view and never changes, except to be retired: changing a view
inserts its next version, so a connection pinned to ``name@3`` keeps its shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models.base import Base, BigIntPK, JSONType, utcnow


class ViewVersion(Base):
    __tablename__ = "views"

    # A growing sequence: a new version changes the table's fingerprint (what workers poll).
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    # {"fields": [...], "rename": {path: key}, "defaults": {path: value}} (app.enrich.views).
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set once by `enrich views retire`: refused from then on.
    retired_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (UniqueConstraint("name", "version", name="uq_views_name_version"),)
