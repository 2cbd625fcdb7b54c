"""The Interactive Experience relay: a callFlows request with the guest's fields in params.

What the OpenAPI document says about it lives in app/experiences/openapi.py.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Body, Depends, Response

from app.auth.bearer import ProfilesRead
from app.core.openapi import method_not_allowed
from app.core.parts import part
from app.experiences import openapi
from app.experiences.schemas import ExperienceCall
from app.experiences.service import FALLBACK_HEADER, Relay

router = APIRouter(prefix="/v1/experiences", tags=["Experiences"])

RelayDep = Annotated[Relay, Depends(part(Relay))]
JSON = "application/json"


@router.post("/call", **openapi.CALL)
async def call_experience(
    _: ProfilesRead,
    call: Annotated[ExperienceCall, Body(openapi_examples=openapi.EXAMPLES)],
    relay: RelayDep,
) -> Response:
    """Run an Interactive Experience for a guest, with their fields in params."""
    relayed = await relay.call(call)
    headers: dict[str, str] = {"X-Cache": relayed.level}
    if relayed.answer is None:
        headers[FALLBACK_HEADER] = relayed.fallback or "unreachable"  # (always set)
        body = orjson.dumps({"fallback": True, "reason": relayed.fallback})
        return Response(body, status_code=200, media_type=JSON, headers=headers)
    answer = relayed.answer
    headers["Content-Type"] = answer.media_type
    return Response(answer.body, status_code=answer.status, headers=headers)


method_not_allowed(router, "/call", ("POST",))
