"""Profiles, their identifiers, and the events that update them."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, Numeric, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models.base import Base, BigIntPK, JSONType, utcnow


class Profile(Base):
    __tablename__ = "profiles"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    traits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    segments: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # Metrics other than the four below, as the CRM sent them.
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    recommendations: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    source: Mapped[str | None] = mapped_column(String(100), default=None)
    # Consent per purpose: {"<purpose>": {"status", "at", "source"}} (app/profiles/consent.py).
    consent: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Event-driven metrics live in columns so that purchases update them atomically in SQL.
    order_count: Mapped[int | None] = mapped_column(Integer, default=None)
    lifetime_value: Mapped[Decimal | None] = mapped_column(Numeric(20, 4), default=None)
    last_order_at: Mapped[datetime | None] = mapped_column(default=None)
    last_event_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=1)


class Identifier(Base):
    __tablename__ = "identifiers"

    type: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(320), primary_key=True)
    # No foreign key: checking one per row cost a third of a bulk import's database time.
    # Erasure deletes a profile's identifiers itself (ProfileRepository.delete).
    profile_id: Mapped[uuid.UUID] = mapped_column(Uuid)

    __table_args__ = (Index("ix_identifiers_profile_id", "profile_id"),)


# Event ids are scoped per client: two clients may use the same id for different events.
# Rows kept from before that (when ids were global) carry this client_id instead of a real one,
# and stay duplicates for every client (see EventRepository.claim).
ANY_CLIENT = "*"


class Event(Base):
    __tablename__ = "events"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("profiles.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

    __table_args__ = (
        Index("ix_events_profile_id", "profile_id"),
        # Retention deletes the oldest first (app/events/retention.py).
        Index("ix_events_received_at", "received_at"),
    )


class ProcessedEvent(Base):
    """Every (client, event_id) ever accepted, with a digest of the event; survives erasure so
    a retried event stays a duplicate and a reused id with another body stays a conflict."""

    __tablename__ = "processed_events"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    # SHA-256 (hex) of the canonical event (EventIn.digest), never the event itself; NULL on
    # rows from before digests were kept.
    digest: Mapped[str | None] = mapped_column(String(64), default=None)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class ConsentRecord(Base):
    """One consent change of a profile, appended in the transaction that made it: the consent
    history. Erased with the profile."""

    __tablename__ = "consent_history"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    profile_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("profiles.id", ondelete="CASCADE")
    )
    purpose: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    # When the guest decided (the write's `at`, or the event's occurred_at).
    at: Mapped[datetime]
    source: Mapped[str | None] = mapped_column(String(100), default=None)
    # How it arrived: api (PUT, PATCH), bulk (bulk, import, demo) or event.
    channel: Mapped[str] = mapped_column(String(16))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_consent_history_profile_id", "profile_id", "id"),)
