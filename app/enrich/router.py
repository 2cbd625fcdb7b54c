"""The Connection endpoint Sitecore Personalize calls during a decision."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response

from app.auth.bearer import ProfilesRead
from app.core.openapi import errors, examples_with_nulls, method_not_allowed
from app.core.parts import part
from app.core.settings import SettingsDep
from app.enrich.cache.store import EnrichCache
from app.enrich.fields import Selection
from app.enrich.request import from_query, keys_and_selection
from app.enrich.response import answer_response
from app.enrich.schemas import (
    ANSWER_EXAMPLES,
    FIELDS_DESCRIPTION,
    FIELDS_STRING_SCHEMA,
    REQUEST_EXAMPLES,
    EnrichAnswer,
    EnrichRequest,
)
from app.identity.identifiers import Key

router = APIRouter(prefix="/v1/enrich", tags=["Enrich"])

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


CacheDep = Annotated[EnrichCache, Depends(part(EnrichCache))]


async def respond(
    request: Request, cache: EnrichCache, keys: tuple[Key, ...], selection: Selection
) -> Response:
    body, level = await cache.answer(keys, selection)
    accept_encoding = request.headers.get("accept-encoding", "").encode("latin-1")
    return answer_response(body, level, accept_encoding)


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
    keys, selection = keys_and_selection(
        body.identifiers, body.fields, settings.default_phone_region
    )
    return await respond(request, cache, keys, selection)


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
    identifiers, fields = from_query(request.scope.get("query_string", b""))
    keys, selection = keys_and_selection(identifiers, fields, settings.default_phone_region)
    return await respond(request, cache, keys, selection)


method_not_allowed(router, "", ("GET", "POST"))
_ANSWER_EXAMPLES = {"200": {"content": {"application/json": {"examples": ANSWER_EXAMPLES}}}}
examples_with_nulls("POST", "/v1/enrich", {"responses": _ANSWER_EXAMPLES})
examples_with_nulls("GET", "/v1/enrich", {"responses": _ANSWER_EXAMPLES})
