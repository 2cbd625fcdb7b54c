"""The profile resource API: read, replace, merge-patch, erase, bulk upsert."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request, Response

from app.dependencies import ProfilesRead, ProfilesWrite, RuntimeDep, SessionDep
from app.exceptions import AppError
from app.ingest.bulk import upsert_documents
from app.profiles.bulk import parse_bulk
from app.profiles.identity import Key, path_key
from app.profiles.invalidation import WriteDep
from app.profiles.schemas import BulkOutcome, BulkRecord, ProfileDocument, ProfileRead
from app.profiles.service import ProfileService
from app.responses import JSONResponse

router = APIRouter(prefix="/v1/profiles", tags=["Profiles"])

# `:path` so that a value holding a slash (sent as %2F) still reaches the endpoint.
RESOURCE = "/{id_type}/{id_value:path}"
PATCH_TYPES = ("application/merge-patch+json", "application/json")

_ERROR: dict[str, Any] = {"description": "an error", "content": {"application/json": {}}}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {**_ERROR, "description": "no profile has this identifier"}
}
_WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {**_ERROR, "description": "invalid identifier or malformed JSON"},
    409: {**_ERROR, "description": "an identifier belongs to another profile"},
    413: {**_ERROR, "description": "the body is too large"},
    422: {**_ERROR, "description": "the document is not valid"},
}
_PATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {
                "schema": {"type": "object"},
                "example": {
                    "traits": {"tier": "platinum", "nickname": None},
                    "identifiers": {"phone": None},
                },
            }
            for media in PATCH_TYPES
        },
    }
}
_BULK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-ndjson": {
                "schema": {"type": "string"},
                "example": '{"identifiers": {"email": "jane@example.com"}, "traits": {}}\n'
                '{"identifiers": {"crm_id": "C-1002"}, "segments": ["new"]}\n',
            },
            "application/json": {
                "schema": {"type": "array", "items": ProfileDocument.model_json_schema()},
            },
        },
    }
}


def _key(runtime: RuntimeDep, id_type: str, id_value: str) -> Key:
    return path_key(id_type, id_value, runtime.settings.default_phone_region)


def _location(key: Key) -> str:
    return f"/v1/profiles/{quote(key[0], safe='')}/{quote(key[1], safe='')}"


@router.get(RESOURCE, response_model=ProfileRead, responses=_NOT_FOUND, summary="Read a profile")
async def get_profile(
    _: ProfilesRead, id_type: str, id_value: str, runtime: RuntimeDep, session: SessionDep
) -> JSONResponse:
    """Return the whole profile, with all its identifiers, found by any one of them."""
    service = ProfileService(session, runtime.settings.default_phone_region)
    return JSONResponse(await service.get(_key(runtime, id_type, id_value)))


@router.put(
    RESOURCE,
    response_model=ProfileRead,
    status_code=200,
    responses={201: {"model": ProfileRead, "description": "created"}, **_WRITE_ERRORS},
    summary="Create or replace a profile",
)
async def put_profile(
    _: ProfilesWrite,
    id_type: str,
    id_value: str,
    document: ProfileDocument,
    runtime: RuntimeDep,
    write: WriteDep,
) -> JSONResponse:
    """Create (201) or replace (200) the profile the path identifies.

    Traits, segments, recommendations, source and metrics are replaced; `order_count`,
    `lifetime_value`, `last_order_at` and `last_event_at` only when the document names them.
    Identifiers are added (the path's included), never removed: PATCH removes one.
    """
    key = _key(runtime, id_type, id_value)
    service = ProfileService(write.session, runtime.settings.default_phone_region)
    result = await service.put(key, document)
    write.touched(result.touched)
    if result.created:
        return JSONResponse(result.view, status_code=201, headers={"Location": _location(key)})
    return JSONResponse(result.view)


@router.patch(
    RESOURCE,
    response_model=ProfileRead,
    responses={**_NOT_FOUND, **_WRITE_ERRORS, 415: _ERROR},
    openapi_extra=_PATCH_BODY,
    summary="Merge-patch a profile (RFC 7396)",
)
async def patch_profile(
    _: ProfilesWrite,
    id_type: str,
    id_value: str,
    request: Request,
    runtime: RuntimeDep,
    write: WriteDep,
) -> JSONResponse:
    """Apply a JSON Merge Patch: members merge, `null` removes one, arrays are replaced.

    `"identifiers": {"phone": null}` removes the phone; a value replaces that type's value.
    """
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in PATCH_TYPES:
        raise AppError(
            "send the patch as application/merge-patch+json",
            status_code=415,
            code="unsupported_media_type",
        )
    try:
        patch = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise AppError("the request body is not valid JSON", code="invalid_json") from exc
    key = _key(runtime, id_type, id_value)
    service = ProfileService(write.session, runtime.settings.default_phone_region)
    result = await service.patch(key, patch)
    write.touched(result.touched)
    return JSONResponse(result.view)


@router.delete(
    RESOURCE,
    status_code=204,
    responses={**_NOT_FOUND, 204: {"description": "erased"}},
    summary="Erase a profile",
)
async def delete_profile(
    _: ProfilesWrite, id_type: str, id_value: str, runtime: RuntimeDep, write: WriteDep
) -> Response:
    """Erase the profile with its identifiers and events (a retried event stays a duplicate)."""
    service = ProfileService(write.session, runtime.settings.default_phone_region)
    write.touched(await service.delete(_key(runtime, id_type, id_value)))
    return Response(status_code=204)


@router.post(
    "/bulk",
    response_model=BulkOutcome,
    responses={
        400: {**_ERROR, "description": "the body is not NDJSON or a JSON array"},
        413: {**_ERROR, "description": "too many records or too many bytes"},
        415: _ERROR,
    },
    openapi_extra=_BULK_BODY,
    summary="Create or replace many profiles",
)
async def bulk_upsert(
    _: ProfilesWrite, request: Request, runtime: RuntimeDep, write: WriteDep
) -> JSONResponse:
    """Upsert NDJSON lines or a JSON array of profile documents, each like a PUT.

    Every record gets an outcome (`created`, `updated`, `unchanged` or `failed` with an
    `error`); good records are saved even when others fail. Sending the same body again
    answers `unchanged` for each record.
    """
    settings = runtime.settings
    parsed = parse_bulk(
        await request.body(), request.headers.get("content-type"), settings.bulk_max_records
    )
    result = await upsert_documents(
        write.session, parsed.documents, region=settings.default_phone_region
    )
    write.touched(result.changed_keys)
    results = [
        *parsed.failures,
        *(BulkRecord(index=r.index, status=r.status, error=r.error) for r in result.results),
    ]
    outcome = BulkOutcome(
        created=result.created,
        updated=result.updated,
        unchanged=result.unchanged,
        failed=result.failed + len(parsed.failures),
        results=results,
    )
    return JSONResponse(outcome.model_dump(mode="json", exclude_none=True))
