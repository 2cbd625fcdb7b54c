"""A subject access request: everything held about one guest, in one document.

The profile as GET answers it, every consent change recorded for it, and the guest's events,
oldest first, a page at a time: a guest may have many more events than one answer should
carry. ``events_next`` is the cursor of the next page (null on the last); it names where the
page ended (received_at, client, event id), so events written meanwhile are not skipped or
repeated.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field
from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError
from app.core.models import Event
from app.identity.identifiers import Key
from app.profiles.repository import ProfileRepository
from app.profiles.schemas import ProfileRead, as_utc, fit_ints, iso
from app.profiles.service import ProfileService

MAX_EVENTS_PAGE = 10_000
# A page also ends once its events' data pass this many bytes (at least one event a page): ten
# thousand large events would otherwise be one answer of gigabytes.
PAGE_MAX_BYTES = 8 * 1_048_576
Position = tuple[datetime, str, str]


class ExportedEvent(BaseModel):
    client_id: str = Field(description="the client that sent it")
    event_id: str
    type: str
    occurred_at: datetime
    received_at: datetime
    data: dict[str, Any]


class ConsentChange(BaseModel):
    purpose: str
    status: str = Field(examples=["denied"])
    at: datetime = Field(description="when the guest decided")
    source: str | None
    channel: str = Field(description="how it arrived: api, bulk (bulk, import) or event")
    recorded_at: datetime


class ProfileExport(BaseModel):
    """Everything held about a guest: their profile, their consent history, their events."""

    exported_at: datetime
    profile: ProfileRead
    consent_history: list[ConsentChange] = Field(
        description="every consent change recorded, oldest first (whole on every page)"
    )
    events: list[ExportedEvent]
    events_next: str | None = Field(
        description="pass as `events_after` for the next page of events; null on the last"
    )


def bad_cursor() -> AppError:
    return AppError("events_after is not a cursor this service gave", code="invalid_cursor")


def encode_cursor(position: Position) -> str:
    at, client_id, event_id = position
    raw = orjson.dumps([at.isoformat(), client_id, event_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Position:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        at, client_id, event_id = orjson.loads(raw)
        moment = as_utc(datetime.fromisoformat(at))
    except (ValueError, TypeError, binascii.Error) as exc:  # (JSONDecodeError is a ValueError)
        raise bad_cursor() from exc
    if not isinstance(client_id, str) or not isinstance(event_id, str):
        raise bad_cursor()
    return moment, client_id, event_id


async def _events(
    session: AsyncSession, profile_id: uuid.UUID, limit: int, after: Position | None
) -> tuple[list[Event], bool]:
    order = (Event.received_at, Event.client_id, Event.event_id)
    query = select(Event).where(Event.profile_id == profile_id)
    if after is not None:
        at, client_id, event_id = after
        if session.get_bind().dialect.name == "sqlite":
            at = at.replace(tzinfo=None)  # (stored naive, in UTC)
        query = query.where(tuple_(*order) > tuple_(at, client_id, event_id))
    rows: list[Event] = []
    size = 0
    # Streamed, so a page cut by its bytes never loaded the rest of the ``limit`` rows.
    result = await session.stream_scalars(query.order_by(*order).limit(limit + 1))
    try:
        async for event in result:
            if len(rows) == limit or (rows and size > PAGE_MAX_BYTES):
                return rows, True
            rows.append(event)
            size += len(orjson.dumps(fit_ints(event.data or {})))
    finally:
        await result.close()
    return rows, False


async def export_profile(
    session: AsyncSession, region: str, key: Key, limit: int, after: str | None
) -> dict[str, Any]:
    """The export of the guest ``key`` names (404 when none), with one page of events."""
    position = decode_cursor(after) if after else None
    profile = await ProfileService(session, region).get(key)
    profile_id = uuid.UUID(profile["profile_id"])
    events, more = await _events(session, profile_id, limit, position)
    history = await ProfileRepository(session).consent_history(profile_id)
    last = events[-1] if events else None
    return {
        "exported_at": iso(datetime.now(UTC)),
        "profile": profile,
        "consent_history": [
            {
                "purpose": change.purpose,
                "status": change.status,
                "at": iso(change.at),
                "source": change.source,
                "channel": change.channel,
                "recorded_at": iso(change.recorded_at),
            }
            for change in history
        ],
        "events": [
            {
                "client_id": event.client_id,
                "event_id": event.event_id,
                "type": event.type,
                "occurred_at": iso(event.occurred_at),
                "received_at": iso(event.received_at),
                "data": fit_ints(event.data or {}),
            }
            for event in events
        ],
        "events_next": (
            encode_cursor((as_utc(last.received_at), last.client_id, last.event_id))
            if more and last
            else None
        ),
    }
