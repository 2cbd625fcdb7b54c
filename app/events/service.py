"""Event rules: idempotency by event_id, identity binding, atomic metric updates."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.events.repository import EventRepository
from app.events.schemas import EventAck, EventIn
from app.exceptions import ConflictError
from app.models import Event
from app.models.base import utcnow
from app.profiles.identity import IdentifierError, Key, write_keys
from app.profiles.repository import ProfileRepository
from app.profiles.schemas import as_utc
from app.profiles.service import ATTEMPTS, ProfileService


class EventService:
    def __init__(self, session: AsyncSession, region: str) -> None:
        self.events = EventRepository(session)
        self.profiles = ProfileService(session, region)
        self.repo = ProfileRepository(session)
        self.region = region

    async def record(self, event: EventIn) -> tuple[EventAck, set[Key]]:
        """Apply a new event, or recognise a repeat; return the ack and the touched keys."""
        keys = write_keys(event.identifiers, self.region)
        if not keys:
            raise IdentifierError("the event needs at least one identifier with a value")
        received_at = utcnow()
        occurred_at = as_utc(event.occurred_at) if event.occurred_at else received_at
        if not await self.events.claim(event.event_id, received_at):
            # A repeat changes nothing; its profile's keys are still refreshed so that a
            # retry after a failed invalidation heals the caches.
            owner = await self.events.profile_of(event.event_id)
            touched = set(await self.repo.keys_of(owner)) if owner else set()
            ack = EventAck(duplicate=True, event_id=event.event_id, profile_id=_text(owner))
            return ack, touched
        for _ in range(ATTEMPTS):
            bound = await self.profiles.bind(keys)
            if await self.events.apply(bound.profile_id, occurred_at, event.amount, received_at):
                break
            # The profile was erased between resolving and updating: resolve again.
        else:
            raise ConflictError("the profile changed while this event was applied; retry it")
        await self.events.add(
            Event(
                event_id=event.event_id,
                profile_id=bound.profile_id,
                type=event.type,
                occurred_at=occurred_at,
                received_at=received_at,
                data=event.data,
            )
        )
        touched = set(await self.repo.keys_of(bound.profile_id))
        ack = EventAck(duplicate=False, event_id=event.event_id, profile_id=str(bound.profile_id))
        return ack, touched


def _text(value: object | None) -> str | None:
    return None if value is None else str(value)
