"""The destination endpoint Triggered Experiences push events to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from app.dependencies import EventsWrite, RuntimeDep
from app.events.schemas import EventAck, EventIn
from app.events.service import EventService
from app.profiles.invalidation import WriteDep
from app.responses import JSONResponse

router = APIRouter(prefix="/v1/events", tags=["Events"])

_ERROR: dict[str, Any] = {"content": {"application/json": {}}}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": EventAck, "description": "a repeat of an event already processed"},
    202: {"model": EventAck, "description": "accepted and committed"},
    400: {**_ERROR, "description": "an invalid identifier, or malformed JSON"},
    409: {**_ERROR, "description": "the identifiers belong to two different profiles"},
    422: {**_ERROR, "description": "a missing or invalid member (a purchase needs data.amount)"},
}


@router.post(
    "", status_code=202, response_model=EventAck, responses=_RESPONSES, summary="Record an event"
)
async def post_event(
    _: EventsWrite, event: EventIn, runtime: RuntimeDep, write: WriteDep
) -> JSONResponse:
    """Record an event once: 202 after it is committed; a repeated `event_id` answers 200
    with `duplicate: true` and changes nothing.

    A `purchase` (with `data.amount`, a number or numeric string) adds to `order_count` and
    `lifetime_value` and moves `last_order_at`; every event moves `last_event_at`. An event
    for an unknown guest creates the profile.
    """
    service = EventService(write.session, runtime.settings.default_phone_region)
    ack, touched = await service.record(event)
    write.touched(touched)
    return JSONResponse(ack.model_dump(), status_code=200 if ack.duplicate else 202)
