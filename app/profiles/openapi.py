"""What the OpenAPI document says about the profile routes: texts, examples, response tables.

Each operation's part is a dict of the route decorator's documentary arguments (``summary``,
``description``, ``responses``, ``openapi_extra``), so that app/profiles/router.py reads as
the endpoints. Each operation's examples name the profile a Postman run works on in order: the
demo guest for reads, Jane (created by PUT, patched, then erased) for writes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path

from app.core.openapi import errors
from app.core.patterns import TYPE_NAME_PATTERN
from app.profiles.schemas import ProfileDocument, ProfileRead, ProfileWritten

# The media types a merge patch is read in (the route refuses others with 415).
PATCH_TYPES = ("application/merge-patch+json", "application/json")
SCOPE_READ = "\n\nScope: `profiles:read`."
SCOPE_WRITE = "\n\nScope: `profiles:write`."
WRITE_ANSWER = """

The answer is the whole profile for a client that also has `profiles:read`; a client with only
`profiles:write` gets its `profile_id` and `version`, so that a write is never a read."""
DEMO_GUEST = "demo@example.com"
JANE = "jane@example.com"


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


def id_value(example: str) -> Any:
    """The path's identifier value, documented with ``example``."""
    return Path(
        description="the identifier's value, normalized like the type's values (URL-encoded)",
        examples=[example],
    )


ReadValue = Annotated[str, id_value(DEMO_GUEST)]
WriteValue = Annotated[str, id_value(JANE)]

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
        elif name == "consent":  # decisions are merged per purpose, never removed
            properties[name] = schema
        else:
            properties[name] = {"anyOf": [schema, {"type": "null"}]}
    return {"type": "object", "properties": properties, "additionalProperties": False}


_PATCH_EXAMPLE = {"traits": {"tier": "platinum", "nickname": None}, "identifiers": {"phone": None}}
# Holds nulls: the router registers it with examples_with_nulls.
PATCH_BODY = {
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
                    },
                    "consent": {
                        "summary": "Withdraw consent to one purpose (the others stay)",
                        "value": {
                            "consent": {
                                "marketing": {
                                    "status": "denied",
                                    "at": "2026-11-28T16:50:00Z",
                                    "source": "preference_center",
                                }
                            }
                        },
                    },
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
    "consent": {
        "marketing": {"status": "denied", "at": "2026-05-01T10:00:00Z", "source": "cmp"},
    },
    "created_at": "2026-11-28T16:45:00Z",
    "updated_at": "2026-11-28T16:45:00Z",
    "version": 1,
}
_PROFILE_CONTENT = {"application/json": {"example": _PROFILE_EXAMPLE}}
PUT_EXAMPLES = {
    "jane": {
        "summary": "A CRM record",
        "value": ProfileDocument.model_config["json_schema_extra"]["examples"][0],  # type: ignore[index]
    }
}

READ: dict[str, Any] = {
    "responses": {200: {"content": _PROFILE_CONTENT}, **_READ_ERRORS},
    "summary": "Read a profile",
    "description": "Return the whole profile, with all its identifiers, found by any one of "
    "them (`/v1/profiles/email/jane@example.com`, `/v1/profiles/crm_id/C-1001`, ...). 404 "
    "when no profile has the identifier." + SCOPE_READ,
}

REPLACE: dict[str, Any] = {
    "responses": {
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
    "summary": "Create or replace a profile",
    "description": """Create (201) or replace (200) the profile the path identifies.

Traits, segments, recommendations, source and metrics are replaced; `order_count`,
`lifetime_value`, `last_order_at` and `last_event_at` only when the document names them.
Identifiers are added (the path's included, when the body does not name it), never removed:
PATCH removes one. An identifier that belongs to another profile is a 409; the body naming
another value of the path's type is a 400. Every worker's enrich cache forgets the profile
before the answer is sent."""
    + WRITE_ANSWER
    + SCOPE_WRITE,
}

PATCH: dict[str, Any] = {
    "responses": {
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
    "openapi_extra": PATCH_BODY,
    "summary": "Merge-patch a profile (RFC 7396)",
    "description": """Apply a JSON Merge Patch (`application/merge-patch+json`; plain
`application/json` is taken too): members merge, `null` removes one, arrays are replaced.

`"identifiers": {"phone": null}` removes the phone; a value replaces that type's value. Only
the metrics the patch names are written, so a patch never overwrites counts that purchase
events move concurrently. 404 when no profile has the path's identifier."""
    + WRITE_ANSWER
    + SCOPE_WRITE,
}

ERASE: dict[str, Any] = {
    "responses": {204: {"description": "erased"}, **_READ_ERRORS},
    "summary": "Erase a profile",
    "description": """Erase the profile with all its identifiers and events, for good (a right to
erasure request). The event ledger keeps the ids of processed events, so a retried event is
still a duplicate and does not bring the guest back. 404 when no profile has the identifier."""
    + SCOPE_WRITE,
}

EXPORT: dict[str, Any] = {
    "responses": {
        **errors(
            400,
            401,
            403,
            404,
            422,
            s400="An invalid identifier type or value, or an `events_after` this service did "
            "not give",
        )
    },
    "summary": "Export everything held about a guest",
    "description": """For a subject access request: the profile as `GET` answers it and the
guest's events (who sent each, when it happened and arrived, its data), oldest first. Events
come a page at a time (`events_limit`, at most 10,000): while `events_next` is not null, ask
again with `events_after` set to it. Each export is audited (the client, a hash of the
identifier, the number of events), never its content. 404 when no profile has the identifier.

Scope: `admin`. An access request is an operator's act: a Personalize connection
(`profiles:read`) never needs a guest's whole history.""",
}

BULK: dict[str, Any] = {
    "responses": {
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
    "openapi_extra": _BULK_BODY,
    "summary": "Create or replace many profiles",
    "description": """Upsert NDJSON lines (`application/x-ndjson`) or a JSON array of profile
documents, each like a PUT addressed by its first identifier.

Every record gets an outcome (`created`, `updated`, `unchanged` or `failed` with an `error`);
good records are saved even when others fail. Sending the same body again answers `unchanged`
for each record, so a retried load is harmless. A body without any record is 400 (an empty
batch is `[]`)."""
    + SCOPE_WRITE,
}
