"""What the OpenAPI document says about the relay route: its text, examples and answers."""

from __future__ import annotations

from typing import Any

from app.core.openapi import errors
from app.experiences.schemas import CALL_EXAMPLE

FALLBACK_BODY_EXAMPLE = {"fallback": True, "reason": "timeout"}
_HEADERS: dict[str, Any] = {
    "X-Experience-Fallback": {
        "description": "Only on the fallback: why Personalize's answer is missing (timeout, "
        "unreachable, upstream_error, invalid_answer, not_configured)",
        "schema": {
            "type": "string",
            "enum": [
                "timeout",
                "unreachable",
                "upstream_error",
                "invalid_answer",
                "not_configured",
            ],
        },
    },
    "X-Cache": {
        "description": "where the guest's fields came from: hit, miss or stale (as enrich)",
        "schema": {"type": "string", "enum": ["hit", "miss", "stale"]},
    },
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Personalize's answer, unchanged (whatever JSON the experience's API "
        "response template makes), or the fallback with `X-Experience-Fallback`",
        "headers": _HEADERS,
        "content": {
            "application/json": {
                "schema": {"type": "object", "additionalProperties": True},
                "examples": {
                    "personalize": {
                        "summary": "Personalize's answer (the experience decides its shape)",
                        "value": {"offer": "free-shipping", "banner": "/img/gold.png"},
                    },
                    "fallback": {
                        "summary": "No answer in time: render the page's default content",
                        "value": FALLBACK_BODY_EXAMPLE,
                    },
                },
            }
        },
    },
    **errors(
        400,
        401,
        403,
        413,
        422,
        503,
        s400="Malformed JSON or an invalid identifier type name; or Personalize's own 400, "
        "passed on (a 401, 404 or 415 from Personalize is passed on the same way)",
        s422="A missing or invalid member: not exactly one of `browserId`, `email` or "
        "`identifiers`, a `channel` not in upper case, `params` too large or using "
        "`params.enrich`, `fields` naming something enrich does not have",
        s503="The guest lookup found neither the database nor a stale copy in time",
    ),
}

CALL: dict[str, Any] = {
    "responses": _RESPONSES,
    "summary": "Run an Interactive Experience for a guest (callFlows relay)",
    "description": """Look the guest up in this service's store by `identifiers` (as
`POST /v1/enrich` does, through the same cache), put their fields into the callFlows request's
`params.enrich`, send it to Personalize's Interactive Experience API (`POST /v2/callFlows` on
`ENRICH_PERSONALIZE_API_URL`), and answer with Personalize's answer unchanged: its status and
its JSON.

`personalize` is the callFlows body as Sitecore documents it: `clientKey`, `channel`,
`language`, `currencyCode`, `pointOfSale`, `friendlyId`, exactly one of `browserId`, `email`
or `identifiers`, and your own `params`. `fields` (enrich's grammar) chooses the guest's
fields; omitted, `ENRICH_EXPERIENCE_FIELDS` does. `params.enrich` has enrich's answer keys
(`found`, `matched`, `traits`, `segments`, ...): an unknown guest is sent with `found: false`
and empty values, so the experience decides what they see. The whole `params` stays within
`ENRICH_EXPERIENCE_PARAMS_MAX_CHARS` (4000): your own params may take all but 400 of it
(more: 422) and the guest's fields are cut to fit, as enrich cuts (`truncated: true`).

When Personalize does not answer within `ENRICH_PERSONALIZE_TIMEOUT_MS` (800), cannot be
reached, answers 5xx or a 2xx that is not JSON, or when the relay is not configured
(`ENRICH_PERSONALIZE_API_URL` empty, reason `not_configured`), the answer is **200** with
`{"fallback": true, "reason": ...}` and an `X-Experience-Fallback` header: a page renders its
default content and moves on, without a retry or an error path. A 4xx from Personalize (a wrong
`clientKey` or `friendlyId`) is passed on as it came, since only the caller can fix it.

Scope: `profiles:read` (it discloses what enrich would).""",
}
EXAMPLES: dict[str, dict[str, Any]] = {
    "email": {"summary": "A guest known by email, two of their fields", "value": CALL_EXAMPLE},
    "browser": {
        "summary": "A web visitor by browserId, identified in our store by guest_ref",
        "value": {
            "identifiers": {"guest_ref": "demo-guest"},
            "personalize": {
                **{k: v for k, v in CALL_EXAMPLE["personalize"].items() if k != "email"},
                "browserId": "a38b230c-11eb-4cf9-8d5d-274e9f344925",
            },
        },
    },
}
