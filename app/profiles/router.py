"""The profile resource API: read, replace, merge-patch, erase, bulk upsert.

What the OpenAPI document says about each operation lives in app/profiles/openapi.py.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.convertors import StringConvertor, register_url_convertor
from starlette.routing import Match
from starlette.types import Scope

from app.audit.log import PROFILE_ERASED, PROFILE_EXPORTED, AuditLog, client_actor
from app.auth.bearer import AdminDep, ProfilesRead, ProfilesWrite
from app.auth.tokens import Principal
from app.core.db import SessionMaker
from app.core.errors import AppError
from app.core.openapi import examples_with_nulls, method_not_allowed
from app.core.parts import part
from app.core.replica_reads import ReadSessions
from app.core.responses import JSONResponse
from app.core.settings import Settings, SettingsDep
from app.identity.identifiers import Key, path_key
from app.platform.logging import short_hash
from app.profiles import openapi
from app.profiles.bulk.body import media_type, parse_bulk, parse_json
from app.profiles.bulk.upsert import upsert_documents
from app.profiles.export import MAX_EVENTS_PAGE, ProfileExport, export_profile
from app.profiles.openapi import PATCH_TYPES, IdType, ReadValue, WriteValue
from app.profiles.schemas import (
    BulkOutcome,
    BulkRecord,
    ProfileDocument,
    ProfileRead,
    ProfileWritten,
)
from app.profiles.service import ProfileService, WriteResult
from app.profiles.writes import WriteDep

router = APIRouter(prefix="/v1/profiles", tags=["Profiles"])


class AnyText(StringConvertor):
    """A path value that may hold anything, a slash (%2F) or a line break (%0A) included."""

    regex = "[\\s\\S]*"


register_url_convertor("anytext", AnyText())
RESOURCE = "/{id_type}/{id_value:anytext}"


def write_answer(caller: Principal, result: WriteResult) -> dict[str, Any]:
    """The profile as a write answers it: whole only for a caller that may read it."""
    if "profiles:read" in caller.scopes:
        return result.view
    return {"profile_id": result.view["profile_id"], "version": result.view["version"]}


def _key(settings: Settings, id_type: str, id_value: str) -> Key:
    return path_key(id_type, id_value, settings.default_phone_region)


def _location(key: Key) -> str:
    return f"/v1/profiles/{quote(key[0], safe='')}/{quote(key[1], safe='')}"


class ExportRoute(APIRoute):
    """``.../{value}/export`` only when the path's last segment is ``export`` as sent: a GET of
    a profile whose identifier value ends in ``/export`` (``%2Fexport``) is a profile read."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE and not scope.get("raw_path", b"").endswith(b"/export"):
            return Match.NONE, {}
        return match, child


async def export_profile_route(
    caller: AdminDep,
    id_type: IdType,
    id_value: ReadValue,
    settings: SettingsDep,
    reads: Annotated[ReadSessions, Depends(part(ReadSessions))],
    sessionmaker: Annotated[SessionMaker, Depends(part(async_sessionmaker))],
    events_limit: Annotated[int, Query(ge=1, le=MAX_EVENTS_PAGE)] = 1000,
    events_after: Annotated[str | None, Query(max_length=1024)] = None,
) -> JSONResponse:
    """Everything held about the guest, for a subject access request."""
    key = _key(settings, id_type, id_value)

    async def read(session: AsyncSession) -> dict[str, Any]:
        region = settings.default_phone_region
        return await export_profile(session, region, key, events_limit, events_after)

    exported = await reads.run([key], read)
    async with sessionmaker() as session, session.begin():  # audited before it is answered
        await AuditLog(session, client_actor(caller.client_id)).record(
            PROFILE_EXPORTED, f"{key[0]}:{short_hash(key[1])}", events=len(exported["events"])
        )
    return JSONResponse(exported, headers={"Cache-Control": "no-store"})


# Before the profile routes: their value takes any text, ``.../export`` included.
router.add_api_route(
    RESOURCE + "/export",
    export_profile_route,
    methods=["GET"],
    response_model=ProfileExport,
    route_class_override=ExportRoute,
    **openapi.EXPORT,
)
method_not_allowed(router, RESOURCE + "/export", ("GET",), route_class=ExportRoute)


@router.get(RESOURCE, response_model=ProfileRead, **openapi.READ)
async def get_profile(
    _: ProfilesRead,
    id_type: IdType,
    id_value: ReadValue,
    settings: SettingsDep,
    reads: Annotated[ReadSessions, Depends(part(ReadSessions))],
) -> JSONResponse:
    """Return the whole profile, found by any one of its identifiers."""
    key = _key(settings, id_type, id_value)

    async def read(session: AsyncSession) -> dict[str, Any]:
        return await ProfileService(session, settings.default_phone_region).get(key)

    # On a read replica that has replayed every write to this identifier, else the primary.
    return JSONResponse(await reads.run([key], read))


@router.put(
    RESOURCE, response_model=ProfileRead | ProfileWritten, status_code=200, **openapi.REPLACE
)
async def put_profile(
    caller: ProfilesWrite,
    id_type: IdType,
    id_value: WriteValue,
    document: Annotated[ProfileDocument, Body(openapi_examples=openapi.PUT_EXAMPLES)],
    settings: SettingsDep,
    write: WriteDep,
) -> JSONResponse:
    """Create or replace the profile the path identifies."""
    key = _key(settings, id_type, id_value)
    service = ProfileService(write.session, settings.default_phone_region)
    result = await service.put(key, document)
    write.touched(result.touched)
    answer = write_answer(caller, result)
    if result.created:
        return JSONResponse(answer, status_code=201, headers={"Location": _location(key)})
    return JSONResponse(answer)


@router.patch(RESOURCE, response_model=ProfileRead | ProfileWritten, **openapi.PATCH)
async def patch_profile(
    caller: ProfilesWrite,
    id_type: IdType,
    id_value: WriteValue,
    request: Request,
    settings: SettingsDep,
    write: WriteDep,
) -> JSONResponse:
    """Apply a JSON Merge Patch to a profile."""
    if media_type(request.headers.get("content-type")) not in PATCH_TYPES:
        raise AppError(
            "send the patch as application/merge-patch+json",
            status_code=415,
            code="unsupported_media_type",
        )
    try:
        patch = parse_json(await request.body())
    except orjson.JSONDecodeError as exc:
        raise AppError("the request body is not valid JSON", code="invalid_json") from exc
    key = _key(settings, id_type, id_value)
    service = ProfileService(write.session, settings.default_phone_region)
    result = await service.patch(key, patch)
    write.touched(result.touched)
    return JSONResponse(write_answer(caller, result))


@router.delete(RESOURCE, status_code=204, **openapi.ERASE)
async def delete_profile(
    caller: ProfilesWrite,
    id_type: IdType,
    id_value: WriteValue,
    settings: SettingsDep,
    write: WriteDep,
) -> Response:
    """Erase a profile with its identifiers and events."""
    service = ProfileService(write.session, settings.default_phone_region)
    key = _key(settings, id_type, id_value)
    write.touched(await service.delete(key))
    # In the erasure's transaction; the identifier only as a hash (the audit outlives it).
    await AuditLog(write.session, client_actor(caller.client_id)).record(
        PROFILE_ERASED, f"{key[0]}:{short_hash(key[1])}"
    )
    return Response(status_code=204)


@router.post("/bulk", response_model=BulkOutcome, **openapi.BULK)
async def bulk_upsert(
    _: ProfilesWrite, request: Request, settings: SettingsDep, write: WriteDep
) -> JSONResponse:
    """Create or replace many profiles."""
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


method_not_allowed(router, RESOURCE, ("GET", "PUT", "PATCH", "DELETE"))
method_not_allowed(router, "/bulk", ("POST",))
examples_with_nulls("PATCH", "/v1/profiles/{id_type}/{id_value}", openapi.PATCH_BODY)
