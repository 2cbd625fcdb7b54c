"""The Connection endpoint Sitecore Personalize calls during a decision."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request, Response

from app.dependencies import ProfilesRead, RuntimeDep
from app.enrich.schemas import MAX_IDENTIFIERS, EnrichAnswer, EnrichRequest
from app.enrich.service import FieldsError, Selection, parse_fields
from app.profiles.identity import lookup_keys

router = APIRouter(prefix="/v1/enrich", tags=["Enrich"])

# Below this the gzip header and CPU cost more than the bytes saved.
GZIP_MIN_BYTES = 1000

_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "model": EnrichAnswer,
        "description": "the answer, known guest or not",
        "headers": {"X-Cache": {"description": "hit, miss or stale", "schema": {"type": "string"}}},
    },
    400: {"description": "an invalid identifier type, or malformed JSON"},
    422: {"description": "an unknown member or an unknown field path"},
}
_QUERY_PARAMETERS = {
    "parameters": [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": description,
        }
        for name, description in (
            ("email", "an identifier; every query parameter but `fields` is one, in order"),
            ("guest_ref", "an identifier (Personalize's guest reference)"),
            ("crm_id", "an identifier"),
            ("phone", "an identifier (E.164, or national in the default region)"),
            ("email_sha256", "an identifier (hex SHA-256 of the normalized email)"),
            ("fields", "comma-separated dot paths: traits.tier,metrics.lifetime_value,segments"),
        )
    ]
}


def accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding allows gzip (``q=0`` refuses it)."""
    for part in header.lower().split(","):
        coding, _, params = part.partition(";")
        if coding.strip() not in ("gzip", "*"):
            continue
        quality = params.strip()
        if quality.startswith("q="):
            try:
                return float(quality[2:]) > 0
            except ValueError:
                return False
        return True
    return False


def answer(request: Request, body: bytes, cache: str) -> Response:
    headers = {"X-Cache": cache, "Vary": "Accept-Encoding"}
    if len(body) > GZIP_MIN_BYTES and accepts_gzip(request.headers.get("accept-encoding", "")):
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/json", headers=headers)


async def respond(
    request: Request, runtime: RuntimeDep, identifiers: dict[str, Any], fields: Selection
) -> Response:
    keys = lookup_keys(identifiers, runtime.settings.default_phone_region)
    body, level = await runtime.enrich_cache.answer(keys, fields)
    return answer(request, body, level)


@router.post("", responses=_ANSWER, response_model=EnrichAnswer, summary="Enrich (POST)")
async def enrich_post(
    _: ProfilesRead, body: EnrichRequest, request: Request, runtime: RuntimeDep
) -> Response:
    """Answer with the profile of the first identifier that matches, trimmed to `fields`.

    An unknown guest, or only empty values and `${...}` placeholders, answers `found: false`
    with the same keys. The answer never exceeds 8,000 characters (`truncated: true` when cut).
    """
    return await respond(request, runtime, body.identifiers, parse_fields(body.fields))


@router.get(
    "",
    responses=_ANSWER,
    response_model=EnrichAnswer,
    openapi_extra=_QUERY_PARAMETERS,
    summary="Enrich (GET)",
)
async def enrich_get(_: ProfilesRead, request: Request, runtime: RuntimeDep) -> Response:
    """Like POST, with identifiers as query parameters in order: `?guest_ref=...&email=...`."""
    identifiers: dict[str, str] = {}
    fields: list[str] = []
    for name, value in request.query_params.multi_items():
        if name.strip().lower() == "fields":
            fields.append(value)
        else:
            identifiers.setdefault(name, value)
    if len(identifiers) > MAX_IDENTIFIERS:
        raise FieldsError(f"at most {MAX_IDENTIFIERS} identifiers", code="validation_error")
    return await respond(request, runtime, identifiers, parse_fields(_or_none(fields)))


def _or_none(fields: Sequence[str]) -> Sequence[str] | None:
    return fields or None
