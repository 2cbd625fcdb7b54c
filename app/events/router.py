"""The destination endpoint Triggered Experiences push events to.

What the OpenAPI document says about it lives in app/events/openapi.py.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Body

from app.auth.bearer import EventsWrite
from app.core.openapi import method_not_allowed
from app.core.responses import JSONResponse
from app.core.settings import SettingsDep
from app.events import openapi
from app.events.schemas import EventAck, EventIn
from app.events.service import EventService
from app.profiles.writes import WriteDep

router = APIRouter(prefix="/v1/events", tags=["Events"])


@router.post("", status_code=202, response_model=EventAck, **openapi.RECORD)
async def post_event(
    caller: EventsWrite,
    event: Annotated[EventIn, Body(openapi_examples=openapi.EXAMPLES)],
    settings: SettingsDep,
    write: WriteDep,
) -> JSONResponse:
    """Record an event once."""
    service = EventService(
        write.session,
        settings.default_phone_region,
        max_clock_skew=timedelta(seconds=settings.event_max_clock_skew_seconds),
    )
    ack, touched = await service.record(caller.client_id, event)
    write.touched(touched)
    return JSONResponse(ack.model_dump(), status_code=200 if ack.duplicate else 202)


method_not_allowed(router, "", ("POST",))
