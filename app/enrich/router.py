"""The Connection endpoint Sitecore Personalize calls during a decision."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response

from app.auth.bearer import ProfilesRead
from app.core.openapi import errors, examples_with_nulls, method_not_allowed
from app.core.parts import part
from app.core.settings import SettingsDep
from app.enrich.cache.store import EnrichCache
from app.enrich.consent import refused_in
from app.enrich.fields import Selection
from app.enrich.request import from_query, wanted
from app.enrich.response import answer_response
from app.enrich.schemas import (
    ANSWER_EXAMPLES,
    FIELDS_DESCRIPTION,
    FIELDS_STRING_SCHEMA,
    REQUEST_EXAMPLES,
    VIEW_DESCRIPTION,
    VIEW_SCHEMA,
    EnrichAnswer,
    EnrichRequest,
    ViewAnswer,
)
from app.enrich.views.definition import ViewRef
from app.enrich.views.registry import ViewRegistry
from app.identity.identifiers import Key
from app.platform.middleware import CONSENT_KEY

router = APIRouter(prefix="/v1/enrich", tags=["Enrich"])

FAST_PATH_NOTE = (
    "\n\nA request with a token this worker has already verified is answered by a fast path "
    "in front of the framework (a pure ASGI handler): same rules, same answers, same headers; "
    "anything it does not handle (a new token, an error) is answered here, as documented."
)
_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer, known guest or not: always the same top-level keys "
        "(`EnrichAnswer`; with a view, the fixed keys and the view's own: `ViewAnswer`).",
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
        404,
        410,
        413,
        422,
        503,
        s400="An invalid identifier type name, malformed JSON, or an empty Bearer token",
        s404="No view has the name (or version) that `view` gives (`unknown_view`)",
        s410="The `view` named (or the client's default view) is retired (`view_retired`)",
        s422="An unknown member, `fields` naming something the answer does not have, or "
        "`view` with `fields` (`view_and_fields`)",
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
        },
        {
            "name": "view",
            "in": "query",
            "required": False,
            "schema": VIEW_SCHEMA,
            "description": VIEW_DESCRIPTION,
            "example": None,
        },
    ]
}
for _parameter in _QUERY["parameters"]:
    if _parameter["example"] is None:
        del _parameter["example"]


CacheDep = Annotated[EnrichCache, Depends(part(EnrichCache))]
ViewsDep = Annotated[ViewRegistry, Depends(part(ViewRegistry))]


async def respond(
    request: Request,
    cache: EnrichCache,
    keys: tuple[Key, ...],
    selection: Selection,
    chosen: tuple[ViewRegistry, ViewRef | None, str],
) -> Response:
    views, ref, client_id = chosen
    selection = views.selection(ref, selection, client_id)
    body, level = await cache.answer(keys, selection)
    if selection.purpose is not None:
        request.scope[CONSENT_KEY] = refused_in(body)  # for the access line
    accept_encoding = request.headers.get("accept-encoding", "").encode("latin-1")
    return answer_response(body, level, accept_encoding)


@router.post(
    "",
    responses=_ANSWER,
    response_model=EnrichAnswer | ViewAnswer,
    summary="Look a guest up (POST)",
    description="""Answer with the profile of the first identifier that matches, trimmed to
`fields` or shaped by a `view`: the call a Personalize Connection makes during a decision.

Identifiers are tried in the order given. An unknown guest, or only empty values and unfilled
`${...}` placeholders, answers 200 with `found: false` and the same keys, so the Connection's
output mapping never breaks. Emails are trimmed and lower-cased, phones normalized to E.164,
type names are case-insensitive, numbers are taken as strings. The answer never exceeds
8,000 characters (lists are cut deterministically and `truncated: true` is added).

Consent: when the view (or else the client) declares a consent purpose and the guest denied
it, or never granted it where it is opt-in, the answer is found but holds no personal data
(`profile_id` null, empty values or the view's defaults) and `consent` says why.

Scope: `profiles:read`."""
    + FAST_PATH_NOTE,
)
async def enrich_post(
    principal: ProfilesRead,
    body: Annotated[EnrichRequest, Body(openapi_examples=REQUEST_EXAMPLES)],
    request: Request,
    settings: SettingsDep,
    cache: CacheDep,
    views: ViewsDep,
) -> Response:
    """Look a guest up by the first identifier that matches."""
    keys, selection, ref = wanted(
        body.identifiers, body.fields, body.view, settings.default_phone_region
    )
    return await respond(request, cache, keys, selection, (views, ref, principal.client_id))


@router.get(
    "",
    responses=_GET_ANSWER,
    response_model=EnrichAnswer | ViewAnswer,
    openapi_extra=_QUERY,
    summary="Look a guest up (GET)",
    description="""The same lookup as POST, with the identifiers as query parameters, tried in
the order given: `?guest_ref=${guest.ref}&email=${guest.email}&fields=traits.tier,segments`.

Every parameter but `fields` and `view` names an identifier type (at most 32). Repeated
`fields` parameters are joined with commas. Scope: `profiles:read`."""
    + FAST_PATH_NOTE,
)
async def enrich_get(
    principal: ProfilesRead,
    request: Request,
    settings: SettingsDep,
    cache: CacheDep,
    views: ViewsDep,
) -> Response:
    """Look a guest up by query parameters."""
    identifiers, fields, view = from_query(request.scope.get("query_string", b""))
    keys, selection, ref = wanted(identifiers, fields, view, settings.default_phone_region)
    return await respond(request, cache, keys, selection, (views, ref, principal.client_id))


method_not_allowed(router, "", ("GET", "POST"))
_ANSWER_EXAMPLES = {"200": {"content": {"application/json": {"examples": ANSWER_EXAMPLES}}}}
examples_with_nulls("POST", "/v1/enrich", {"responses": _ANSWER_EXAMPLES})
examples_with_nulls("GET", "/v1/enrich", {"responses": _ANSWER_EXAMPLES})
