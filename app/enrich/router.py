"""The Connection endpoint Sitecore Personalize calls during a decision."""

from __future__ import annotations

import gzip
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Body, Depends, Request, Response

from app.auth.bearer import ProfilesRead
from app.core.openapi import errors, examples_with_nulls, method_not_allowed
from app.core.parts import part
from app.core.settings import Settings, SettingsDep
from app.enrich.cache.store import EnrichCache
from app.enrich.fields import FieldsError, Selection, parse_fields
from app.enrich.schemas import (
    ANSWER_EXAMPLES,
    FIELDS_DESCRIPTION,
    FIELDS_STRING_SCHEMA,
    MAX_IDENTIFIERS,
    REQUEST_EXAMPLES,
    EnrichAnswer,
    EnrichRequest,
)
from app.identity.identifiers import lookup_keys

router = APIRouter(prefix="/v1/enrich", tags=["Enrich"])

# Below this the gzip header and CPU cost more than the bytes saved.
GZIP_MIN_BYTES = 1000

FAST_PATH_NOTE = (
    "\n\nA request with a token this worker has already verified is answered by a fast path "
    "in front of the framework (a pure ASGI handler): same rules, same answers, same headers; "
    "anything it does not handle (a new token, an error) is answered here, as documented."
)
_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "model": EnrichAnswer,
        "description": "The answer, known guest or not: always the same top-level keys.",
        "headers": {
            "X-Cache": {
                "description": "where the answer came from: hit, miss or stale",
                "schema": {"type": "string", "enum": ["hit", "miss", "stale"]},
            },
            "Content-Encoding": {
                "description": "gzip when the request accepts it and the answer is over 1 KB",
                "schema": {"type": "string"},
            },
        },
        "content": {"application/json": {"examples": ANSWER_EXAMPLES}},
    },
    **errors(
        400,
        401,
        403,
        413,
        422,
        503,
        s400="An invalid identifier type name, malformed JSON, or an empty Bearer token",
        s422="An unknown member, or `fields` naming something the answer does not have",
    ),
}
_GET_ANSWER = {status: value for status, value in _ANSWER.items() if status != 413}
_QUERY: dict[str, Any] = {
    "parameters": [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": description,
            "example": example,
        }
        for name, description, example in (
            (
                "email",
                "An identifier. Every query parameter but `fields` is one, tried in the order "
                "given: the first that matches wins. Custom types work the same way.",
                "demo@example.com",
            ),
            ("guest_ref", "An identifier (Personalize's guest reference)", None),
            ("crm_id", "An identifier", None),
            ("phone", "An identifier (E.164, or national in the default region)", None),
            ("email_sha256", "An identifier: hex SHA-256 of the normalized email", None),
        )
    ]
    + [
        {
            "name": "fields",
            "in": "query",
            "required": False,
            "schema": FIELDS_STRING_SCHEMA,
            "description": FIELDS_DESCRIPTION,
            "example": "traits.tier,metrics.lifetime_value,segments",
        }
    ]
}
for _parameter in _QUERY["parameters"]:
    if _parameter["example"] is None:
        del _parameter["example"]


def accepts_gzip(header: str) -> bool:
    """Whether Accept-Encoding allows gzip (``q=0`` refuses it)."""
    for item in header.lower().split(","):
        coding, _, params = item.partition(";")
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


def query_items(query_string: bytes) -> list[tuple[str, str]]:
    """The query's name-value pairs. Bytes that are not UTF-8 are kept as lone surrogates
    (rather than replaced by U+FFFD, which would look a made-up identifier up), so that
    ``lookup_keys`` refuses them as a 400."""
    return parse_qsl(
        query_string.decode("latin-1"), keep_blank_values=True, errors="surrogateescape"
    )


def answer(request: Request, body: bytes, cache: str) -> Response:
    headers = {"X-Cache": cache, "Vary": "Accept-Encoding"}
    if len(body) > GZIP_MIN_BYTES and accepts_gzip(request.headers.get("accept-encoding", "")):
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type="application/json", headers=headers)


CacheDep = Annotated[EnrichCache, Depends(part(EnrichCache))]


async def respond(
    request: Request,
    settings: Settings,
    cache: EnrichCache,
    identifiers: dict[str, Any],
    fields: Selection,
) -> Response:
    keys = lookup_keys(identifiers, settings.default_phone_region)
    body, level = await cache.answer(keys, fields)
    return answer(request, body, level)


@router.post(
    "",
    responses=_ANSWER,
    response_model=EnrichAnswer,
    summary="Look a guest up (POST)",
    description="""Answer with the profile of the first identifier that matches, trimmed to
`fields`: the call a Personalize Connection makes during a decision.

Identifiers are tried in the order given. An unknown guest, or only empty values and unfilled
`${...}` placeholders, answers 200 with `found: false` and the same keys, so the Connection's
output mapping never breaks. Emails are trimmed and lower-cased, phones normalized to E.164,
type names are case-insensitive, numbers are taken as strings. The answer never exceeds
8,000 characters (lists are cut deterministically and `truncated: true` is added).

Scope: `profiles:read`."""
    + FAST_PATH_NOTE,
)
async def enrich_post(
    _: ProfilesRead,
    body: Annotated[EnrichRequest, Body(openapi_examples=REQUEST_EXAMPLES)],
    request: Request,
    settings: SettingsDep,
    cache: CacheDep,
) -> Response:
    """Look a guest up by the first identifier that matches."""
    return await respond(request, settings, cache, body.identifiers, parse_fields(body.fields))


@router.get(
    "",
    responses=_GET_ANSWER,
    response_model=EnrichAnswer,
    openapi_extra=_QUERY,
    summary="Look a guest up (GET)",
    description="""The same lookup as POST, with the identifiers as query parameters, tried in
the order given: `?guest_ref=${guest.ref}&email=${guest.email}&fields=traits.tier,segments`.

Every parameter but `fields` names an identifier type (at most 32). Repeated `fields`
parameters are joined with commas. Scope: `profiles:read`."""
    + FAST_PATH_NOTE,
)
async def enrich_get(
    _: ProfilesRead, request: Request, settings: SettingsDep, cache: CacheDep
) -> Response:
    """Look a guest up by query parameters."""
    identifiers: dict[str, str] = {}
    fields: list[str] = []
    for name, value in query_items(request.scope.get("query_string", b"")):
        if name.strip().lower() == "fields":
            fields.append(value)
        else:
            identifiers.setdefault(name, value)
    if len(identifiers) > MAX_IDENTIFIERS:
        raise FieldsError(f"at most {MAX_IDENTIFIERS} identifiers", code="validation_error")
    return await respond(request, settings, cache, identifiers, parse_fields(_joined(fields)))


def _joined(fields: list[str]) -> str | None:
    return ",".join(fields) if fields else None


method_not_allowed(router, "", ("GET", "POST"))
_ANSWER_EXAMPLES = {"200": {"content": {"application/json": {"examples": ANSWER_EXAMPLES}}}}
examples_with_nulls("POST", "/v1/enrich", {"responses": _ANSWER_EXAMPLES})
examples_with_nulls("GET", "/v1/enrich", {"responses": _ANSWER_EXAMPLES})
