"""Event rules: idempotency by (client, event_id), identity binding, atomic bounded metrics."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import orjson
from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import AppError, ConflictError
from app.core.models import Event
from app.core.models.base import utcnow
from app.core.models.profiles import ANY_CLIENT
from app.events.repository import MAX_LIFETIME_VALUE, MAX_ORDER_COUNT, EventRepository
from app.events.schemas import CONSENT, EventAck, EventIn, consent_of
from app.identity.identifiers import IdentifierError, Key, write_keys
from app.profiles import consent
from app.profiles.repository import ProfileRepository
from app.profiles.schemas import as_utc, iso
from app.profiles.service import ATTEMPTS, ProfileService


class MetricLimitError(AppError):
    """A purchase that would take a metric past the largest value it holds."""

    status_code = 422
    code = "validation_error"


def digest(event: EventIn, keys: list[Key]) -> str:
    """SHA-256 (hex) of the event in a canonical form: what a retry of it always repeats.

    Identifiers as normalized keys in order of value, ``type`` in lower case, ``occurred_at``
    in UTC (or null: the time of receipt is not part of the event), ``data`` with sorted keys;
    so member order, letter case and spelling of the same values make no difference.
    """
    canonical = {
        "event_id": event.event_id,
        "type": event.type,
        "identifiers": sorted(keys),
        "occurred_at": iso(event.occurred_at) if event.occurred_at else None,
        "data": event.data,
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


class EventService:
    def __init__(self, session: AsyncSession, region: str, *, max_clock_skew: timedelta) -> None:
        self.events = EventRepository(session)
        self.profiles = ProfileService(session, region)
        self.repo = ProfileRepository(session)
        self.region = region
        self.max_clock_skew = max_clock_skew

    async def record(self, client_id: str, event: EventIn) -> tuple[EventAck, set[Key]]:
        """Apply a new event, or recognise a repeat; return the ack and the touched keys."""
        keys = write_keys(event.identifiers, self.region)
        if not keys:
            raise IdentifierError("the event needs at least one identifier with a value")
        received_at = utcnow()
        occurred_at = as_utc(event.occurred_at) if event.occurred_at else received_at
        self._check_not_ahead(occurred_at, received_at)
        fingerprint = digest(event, keys)
        if not await self.events.claim(client_id, event.event_id, fingerprint, received_at):
            return await self._repeat(client_id, event.event_id, fingerprint)
        for _ in range(ATTEMPTS):
            bound = await self.profiles.bind(keys)
            if await self.events.apply(bound.profile_id, occurred_at, event.amount, received_at):
                break
            await self._check_room(bound.profile_id, event.amount)
            # The profile was erased between resolving and updating: resolve again.
        else:
            raise ConflictError("the profile changed while this event was applied; retry it")
        if event.type == CONSENT:
            await self._consent(bound.profile_id, event, occurred_at)
        await self.events.add(
            Event(
                client_id=client_id,
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

    async def _consent(self, profile_id: uuid.UUID, event: EventIn, occurred_at: datetime) -> None:
        """A consent event: the decision, made at ``occurred_at``, under the rules of every
        consent write (an older decision than the stored one changes nothing)."""
        purpose, decision = consent_of(event.data)
        decision.at = occurred_at
        await consent.record(self.repo, profile_id, {purpose: decision}, None, "event")

    def _check_not_ahead(self, occurred_at: datetime, received_at: datetime) -> None:
        """Refuse a time further ahead than clocks disagree: it would pin last_event_at."""
        if occurred_at > received_at + self.max_clock_skew:
            seconds = int(self.max_clock_skew.total_seconds())
            message = f"occurred_at is more than {seconds} s ahead of the server's clock"
            raise RequestValidationError(
                [{"type": "value_error", "loc": ("body", "occurred_at"), "msg": message}]
            )

    async def _repeat(
        self, client_id: str, event_id: str, fingerprint: str
    ) -> tuple[EventAck, set[Key]]:
        """A repeat changes nothing: the same event is a duplicate, another one a 409.

        The duplicate of this client's own event names the profile its first answer named
        (unless it was erased), and refreshes that profile's keys so that a retry after a
        failed invalidation heals the caches. An id processed before ids were per client stays
        a duplicate for everyone, naming no profile: this client may not have sent it.
        """
        earlier = await self.events.earlier(client_id, event_id)
        if ANY_CLIENT in earlier:
            return EventAck(duplicate=True, event_id=event_id, profile_id=None), set()
        if earlier.get(client_id) != fingerprint:
            raise ConflictError(
                "this event_id was already used for another event: a repeat must be the same "
                "event, a new event needs a new event_id"
            )
        owner = await self.events.profile_of(client_id, event_id)
        touched = set(await self.repo.keys_of(owner)) if owner else set()
        ack = EventAck(duplicate=True, event_id=event_id, profile_id=_text(owner))
        return ack, touched

    async def _check_room(self, profile_id: uuid.UUID, amount: Decimal | None) -> None:
        """After an event did not apply: 422 if a bound refused it (else it was erased)."""
        totals = await self.events.totals(profile_id)
        if totals is None or amount is None:
            return
        count, value = totals
        if count >= MAX_ORDER_COUNT:
            metric, largest = "order_count", str(MAX_ORDER_COUNT)
        elif value + amount > MAX_LIFETIME_VALUE:
            metric, largest = "lifetime_value", "1e14"
        else:
            return  # changed meanwhile: try again
        raise MetricLimitError(
            f"the purchase would take metrics.{metric} past {largest}, the largest it holds; "
            "the event was not recorded"
        )


def _text(value: object | None) -> str | None:
    return None if value is None else str(value)
