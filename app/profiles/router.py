"""The profile resource API: read, replace, merge-patch, erase, bulk upsert."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Body, Path, Request, Response
from pydantic import BaseModel, ConfigDict
from starlette.convertors import StringConvertor, register_url_convertor

from app.audit.log import PROFILE_ERASED, AuditLog, client_actor
from app.auth.bearer import ProfilesRead, ProfilesWrite
from app.auth.tokens import Principal
from app.core.db import SessionDep
from app.core.errors import AppError
from app.core.openapi import errors, examples_with_nulls, method_not_allowed
from app.core.patterns import TYPE_NAME_PATTERN
from app.core.responses import JSONResponse
from app.core.settings import Settings, SettingsDep
from app.identity.identifiers import Key, path_key
from app.platform.logging import short_hash
from app.profiles.bulk.body import parse_bulk
from app.profiles.bulk.upsert import upsert_documents
from app.profiles.schemas import BulkOutcome, BulkRecord, ProfileDocument, ProfileRead
from app.profiles.service import ProfileService, WriteResult
from app.profiles.writes import WriteDep

router = APIRouter(prefix="/v1/profiles", tags=["Profiles"])


class AnyText(StringConvertor):
    """A path value that may hold anything, a slash (%2F) or a line break (%0A) included."""

    regex = "[\\s\\S]*"


register_url_convertor("anytext", AnyText())
RESOURCE = "/{id_type}/{id_value:anytext}"
PATCH_TYPES = ("application/merge-patch+json", "application/json")
SCOPE_READ = "\n\nScope: `profiles:read`."
SCOPE_WRITE = "\n\nScope: `profiles:write`."
WRITE_ANSWER = """

The answer is the whole profile for a client that also has `profiles:read`; a client with only
`profiles:write` gets its `profile_id` and `version`, so that a write is never a read."""


class ProfileWritten(BaseModel):
    """What a write answers a client without ``profiles:read``: which profile, which version."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"profile_id": "1b0e8c8a-4c1f-4b7e-9d54-2f1e9a3c7d10", "version": 2}]
        }
    )

    profile_id: str
    version: int


def write_answer(caller: Principal, result: WriteResult) -> dict[str, Any]:
    """The profile as a write answers it: whole only for a caller that may read it."""
    if "profiles:read" in caller.scopes:
        return result.view
    return {"profile_id": result.view["profile_id"], "version": result.view["version"]}


# Each operation's examples name the profile a Postman run works on in order: the demo guest
# for reads, Jane (created by PUT, patched, then erased) for writes.
IdType = Annotated[
    str,
    Path(
        description="identifier type: email, phone, crm_id, guest_ref, email_sha256 or a "
        "custom [a-z][a-z0-9_]{0,31} (case-insensitive)",
        examples=["email"],
        # Documented, not validated by FastAPI: the service answers an invalid type with 400.
        json_schema_extra={"pattern": TYPE_NAME_PATTERN},
    ),
]
DEMO_GUEST = "demo@example.com"
JANE = "jane@example.com"


def id_value(example: str) -> Any:
    return Path(
        description="the identifier's value, normalized like the type's values (URL-encoded)",
        examples=[example],
    )


_READ_ERRORS = errors(400, 401, 403, 404, s400="An invalid identifier type or value")
_WRITE_ERRORS = errors(
    400,
    401,
    403,
    409,
    413,
    422,
    s400="An invalid identifier (type or value, in the path or the body), or malformed JSON",
)


def _patch_schema() -> dict[str, Any]:
    """A merge patch of a profile document: its members, each also null (remove it)."""
    document = ProfileDocument.model_json_schema(ref_template="#/components/schemas/{model}")
    properties: dict[str, Any] = {}
    for name, schema in document["properties"].items():
        schema = {k: v for k, v in schema.items() if k not in ("default", "title")}
        if name == "identifiers":
            values = schema["additionalProperties"]["anyOf"]
            schema["additionalProperties"] = {
                "anyOf": [*values, {"type": "number"}, {"type": "null"}]
            }
            properties[name] = schema
        else:
            properties[name] = {"anyOf": [schema, {"type": "null"}]}
    return {"type": "object", "properties": properties, "additionalProperties": False}


_PATCH_EXAMPLE = {"traits": {"tier": "platinum", "nickname": None}, "identifiers": {"phone": None}}
_PATCH_BODY = {
    "requestBody": {
        "required": True,
        "description": "RFC 7396: members merge, `null` removes one, arrays are replaced",
        "content": {
            media: {
                "schema": _patch_schema(),
                "examples": {
                    "tier": {
                        "summary": "Change a trait, drop another and the phone",
                        "value": _PATCH_EXAMPLE,
                    }
                },
            }
            for media in PATCH_TYPES
        },
    }
}
_BULK_NDJSON = (
    '{"identifiers": {"email": "jane@example.com"}, "traits": {"first_name": "Jane"}}\n'
    '{"identifiers": {"crm_id": "C-1002"}, "segments": ["new"]}\n'
)
_BULK_BODY = {
    "requestBody": {
        "required": True,
        "description": "NDJSON (one profile document a line) or a JSON array of documents, "
        "at most 10,000 records",
        "content": {
            # Any text with a record in it: a line that is not a document fails alone (its
            # outcome says why); a body of nothing but JSON whitespace is refused.
            "application/x-ndjson": {
                "schema": {
                    "type": "string",
                    "pattern": "[^ \\t\\r\\n]",
                    "description": "one profile document (JSON) per line",
                },
                "example": _BULK_NDJSON,
            },
            "application/json": {
                "schema": {
                    "type": "array",
                    "items": {
                        "description": "a profile document; a record that is not one fails "
                        "alone, with its error in the outcome",
                        "anyOf": [{"$ref": "#/components/schemas/ProfileDocument"}, {}],
                    },
                },
                "example": [
                    {"identifiers": {"email": JANE}, "traits": {"first_name": "Jane"}},
                    {"identifiers": {"crm_id": "C-1002"}, "segments": ["new"]},
                ],
            },
        },
    }
}
_PROFILE_EXAMPLE = {
    "profile_id": "1b0e8c8a-4c1f-4b7e-9d54-2f1e9a3c7d10",
    "identifiers": {
        "crm_id": "C-1001",
        "email": JANE,
        "email_sha256": "8c87b489ce35cf2e2f39f80e282cb2e804932a56a213983eeeb428407d43b52d",
    },
    "traits": {"first_name": "Jane", "tier": "gold", "loyalty_points": 4200},
    "segments": ["high_value", "newsletter"],
    "metrics": {"lifetime_value": 1830.5, "order_count": 14},
    "recommendations": [{"product_id": "SKU-123", "score": 0.92}],
    "source": "crm",
    "created_at": "2026-11-28T16:45:00Z",
    "updated_at": "2026-11-28T16:45:00Z",
    "version": 1,
}
_PROFILE_CONTENT = {"application/json": {"example": _PROFILE_EXAMPLE}}
_PUT_EXAMPLES = {
    "jane": {
        "summary": "A CRM record",
        "value": ProfileDocument.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
    }
}


def _key(settings: Settings, id_type: str, id_value: str) -> Key:
    return path_key(id_type, id_value, settings.default_phone_region)


def _location(key: Key) -> str:
    return f"/v1/profiles/{quote(key[0], safe='')}/{quote(key[1], safe='')}"


@router.get(
    RESOURCE,
    response_model=ProfileRead,
    responses={200: {"content": _PROFILE_CONTENT}, **_READ_ERRORS},
    summary="Read a profile",
    description="Return the whole profile, with all its identifiers, found by any one of them "
    "(`/v1/profiles/email/jane@example.com`, `/v1/profiles/crm_id/C-1001`, ...). 404 when no "
    "profile has the identifier." + SCOPE_READ,
)
async def get_profile(
    _: ProfilesRead,
    id_type: IdType,
    id_value: Annotated[str, id_value(DEMO_GUEST)],
    settings: SettingsDep,
    session: SessionDep,
) -> JSONResponse:
    """Return the whole profile, found by any one of its identifiers."""
    service = ProfileService(session, settings.default_phone_region)
    return JSONResponse(await service.get(_key(settings, id_type, id_value)))


@router.put(
    RESOURCE,
    response_model=ProfileRead | ProfileWritten,
    status_code=200,
    responses={
        200: {"description": "replaced", "content": _PROFILE_CONTENT},
        201: {
            "model": ProfileRead | ProfileWritten,
            "description": "created",
            "headers": {
                "Location": {"description": "the profile's URL", "schema": {"type": "string"}}
            },
            "content": _PROFILE_CONTENT,
        },
        **_WRITE_ERRORS,
    },
    summary="Create or replace a profile",
    description="""Create (201) or replace (200) the profile the path identifies.

Traits, segments, recommendations, source and metrics are replaced; `order_count`,
`lifetime_value`, `last_order_at` and `last_event_at` only when the document names them.
Identifiers are added (the path's included, when the body does not name it), never removed:
PATCH removes one. An identifier that belongs to another profile is a 409; the body naming
another value of the path's type is a 400. Every worker's enrich cache forgets the profile
before the answer is sent."""
    + WRITE_ANSWER
    + SCOPE_WRITE,
)
async def put_profile(
    caller: ProfilesWrite,
    id_type: IdType,
    id_value: Annotated[str, id_value(JANE)],
    document: Annotated[ProfileDocument, Body(openapi_examples=_PUT_EXAMPLES)],
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


@router.patch(
    RESOURCE,
    response_model=ProfileRead | ProfileWritten,
    responses={
        200: {"description": "the patched profile", "content": _PROFILE_CONTENT},
        **errors(
            400,
            401,
            403,
            404,
            409,
            413,
            415,
            422,
            s400="An invalid identifier (type or value), or malformed JSON",
            s409="An identifier belongs to another profile, or the patch would leave none",
        ),
    },
    openapi_extra=_PATCH_BODY,
    summary="Merge-patch a profile (RFC 7396)",
    description="""Apply a JSON Merge Patch (`application/merge-patch+json`; plain
`application/json` is taken too): members merge, `null` removes one, arrays are replaced.

`"identifiers": {"phone": null}` removes the phone; a value replaces that type's value. Only
the metrics the patch names are written, so a patch never overwrites counts that purchase
events move concurrently. 404 when no profile has the path's identifier."""
    + WRITE_ANSWER
    + SCOPE_WRITE,
)
async def patch_profile(
    caller: ProfilesWrite,
    id_type: IdType,
    id_value: Annotated[str, id_value(JANE)],
    request: Request,
    settings: SettingsDep,
    write: WriteDep,
) -> JSONResponse:
    """Apply a JSON Merge Patch to a profile."""
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
    key = _key(settings, id_type, id_value)
    service = ProfileService(write.session, settings.default_phone_region)
    result = await service.patch(key, patch)
    write.touched(result.touched)
    return JSONResponse(write_answer(caller, result))


@router.delete(
    RESOURCE,
    status_code=204,
    responses={204: {"description": "erased"}, **_READ_ERRORS},
    summary="Erase a profile",
    description="""Erase the profile with all its identifiers and events, for good (a right to
erasure request). The event ledger keeps the ids of processed events, so a retried event is
still a duplicate and does not bring the guest back. 404 when no profile has the identifier."""
    + SCOPE_WRITE,
)
async def delete_profile(
    caller: ProfilesWrite,
    id_type: IdType,
    id_value: Annotated[str, id_value(JANE)],
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


@router.post(
    "/bulk",
    response_model=BulkOutcome,
    responses={
        200: {
            "description": "one outcome per record",
            "content": {
                "application/json": {
                    "example": {
                        "created": 1,
                        "updated": 0,
                        "unchanged": 1,
                        "failed": 0,
                        "results": [
                            {"index": 0, "status": "unchanged"},
                            {"index": 1, "status": "created"},
                        ],
                    }
                }
            },
        },
        **errors(
            400,
            401,
            403,
            413,
            415,
            s400="The body is empty, or not NDJSON or a JSON array",
            s413="Too many records (10,000) or too many bytes",
        ),
    },
    openapi_extra=_BULK_BODY,
    summary="Create or replace many profiles",
    description="""Upsert NDJSON lines (`application/x-ndjson`) or a JSON array of profile
documents, each like a PUT addressed by its first identifier.

Every record gets an outcome (`created`, `updated`, `unchanged` or `failed` with an `error`);
good records are saved even when others fail. Sending the same body again answers `unchanged`
for each record, so a retried load is harmless. A body without any record is 400 (an empty
batch is `[]`)."""
    + SCOPE_WRITE,
)
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
examples_with_nulls("PATCH", "/v1/profiles/{id_type}/{id_value}", _PATCH_BODY)
