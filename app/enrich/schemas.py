"""The Connection endpoint's request and answer, with the examples the docs and Postman show."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.patterns import TYPE_NAME_PATTERN, WS, W, any_case

# A guest has a handful of identifiers; a request naming more is not a lookup.
MAX_IDENTIFIERS = 32
# `fields` as one comma-separated string (POST, or GET's query), or as a list of such strings.
MAX_FIELDS_TEXT = 2000
MAX_FIELDS_ITEMS = 100
MAX_FIELDS_ITEM = 200

_MAPS = f"(?:{any_case('traits')}|{any_case('metrics')})"
_LISTS = f"(?:{any_case('segments')}|{any_case('recommendations')})"
_FIXED = "|".join(
    any_case(name) for name in ("found", "matched", "profile_id", "updated_at", "stale")
)
# One comma-separated item: blank, an unfilled ${...}, a fixed key, a whole root, or a dot path
# into traits or metrics; blanks around items and around the dots do not count. Written so that
# each character has one way to match (no nested ambiguity): linear time on any input.
_PLACEHOLDER = f"\\$\\{{[^}},]*(?:\\}}{W}*)?"
_NON_BLANK = f"[^.,{WS}]"
_PATH = f"(?:{W}*\\.{W}*{_NON_BLANK}(?:[^.,]*{_NON_BLANK})?)+"
_ITEM = f"{W}*(?:{_PLACEHOLDER}|(?:{_FIXED}|{_LISTS}){W}*|{_MAPS}(?:{_PATH})?{W}*)?"
FIELDS_PATTERN = f"^{_ITEM}(?:,{_ITEM})*$"

# `view`: a view's name, or name@version; blank or an unfilled ${...} counts as none.
MAX_VIEW_NAME = 48
VIEW_NAME = f"[A-Za-z][A-Za-z0-9_]{{0,{MAX_VIEW_NAME - 1}}}"
VIEW_REF_PATTERN = f"^{W}*(?:{VIEW_NAME}(?:@[1-9][0-9]{{0,8}})?|{_PLACEHOLDER})?{W}*$"
VIEW_REF_MAX_CHARS = 128
VIEW_DESCRIPTION = (
    "A view (`enrich views`): a named, versioned selection of fields with flat keys and "
    "defaults, so the answer has a fixed shape for one Connection. `name` is its latest live "
    "version, `name@3` that version for good. The answer is then the fixed keys (`found`, "
    "`matched`, `profile_id`, `updated_at`, `stale`) plus the view's fields: renamed ones as "
    "flat top-level keys (their default, else null, when the guest lacks the value), the "
    "others nested in their root as `fields` would give them. Not with `fields` (422). "
    "Unknown view: 404; retired: 410. Omitted, blank or an unfilled `${...}`: the client's "
    "default view if it has one (and no `fields` is given), else none. Names are "
    "case-insensitive."
)
VIEW_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": VIEW_REF_MAX_CHARS,
    "pattern": VIEW_REF_PATTERN,
}

FIELDS_DESCRIPTION = (
    "What goes inside `traits`, `metrics`, `segments` and `recommendations`: comma-separated "
    "dot paths (`traits.tier`, `metrics.lifetime_value`, `segments`, `recommendations`), as one "
    f"string of at most {MAX_FIELDS_TEXT} characters or a list of at most {MAX_FIELDS_ITEMS} "
    f"such strings of at most {MAX_FIELDS_ITEM} characters each. Root names are "
    "case-insensitive; blanks and unfilled `${...}` placeholders are ignored; the fixed keys "
    "(`found`, `matched`, `profile_id`, `updated_at`, `stale`) may be named and change "
    "nothing. Omitted, empty or only placeholders: everything."
)
FIELDS_STRING_SCHEMA: dict[str, Any] = {
    "type": "string",
    "maxLength": MAX_FIELDS_TEXT,
    "pattern": FIELDS_PATTERN,
}
IDENTIFIERS_DESCRIPTION = (
    "Identifier type -> value, tried in this order; the first that matches a profile wins. "
    "Types: `email`, `phone`, `crm_id`, `guest_ref`, `email_sha256` or any custom "
    "`[a-z][a-z0-9_]{0,31}` (case-insensitive). Values are strings or numbers; empty values, "
    "unfilled `${...}` placeholders and values that cannot be of their type are skipped."
)

DEMO_ANSWER: dict[str, Any] = {
    "found": True,
    "matched": "email",
    "profile_id": "1b0e8c8a-4c1f-4b7e-9d54-2f1e9a3c7d10",
    "traits": {"tier": "platinum"},
    "segments": ["tier_platinum", "likes_running", "high_value", "newsletter", "active_30d"],
    "metrics": {"lifetime_value": 8421.75},
    "recommendations": [],
    "updated_at": "2026-11-28T16:45:00Z",
    "stale": False,
}
UNKNOWN_ANSWER: dict[str, Any] = {
    "found": False,
    "matched": None,
    "profile_id": None,
    "traits": {},
    "segments": [],
    "metrics": {},
    "recommendations": [],
    "updated_at": None,
    "stale": False,
}
# The demo guest through the demo's example view (`enrich demo` creates `web_offer`).
DEMO_VIEW_ANSWER: dict[str, Any] = {
    "found": True,
    "matched": "email",
    "profile_id": "1b0e8c8a-4c1f-4b7e-9d54-2f1e9a3c7d10",
    "segments": ["tier_platinum", "likes_running", "high_value", "newsletter", "active_30d"],
    "tier": "platinum",
    "first_name": "Dana",
    "lifetime_value": 8421.75,
    "churn_risk": 0.04,
    "updated_at": "2026-11-28T16:45:00Z",
    "stale": False,
}
REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "demo_guest": {
        "summary": "The demo guest, by email (found)",
        "description": "The test guest that `enrich demo` loads; answers `found: true`.",
        "value": {
            "identifiers": {"email": "demo@example.com"},
            "fields": ["traits.tier", "metrics.lifetime_value", "segments"],
        },
    },
    "personalize_template": {
        "summary": "As a Personalize Connection sends it (guest_ref first)",
        "description": "`${...}` variables filled by Personalize: the guest reference is tried "
        "first, then the email. A variable left unfilled is skipped.",
        "value": {
            "identifiers": {"guest_ref": "demo-guest", "email": "${guest.email}"},
            "fields": "traits.tier,metrics.lifetime_value,segments",
        },
    },
    "demo_view": {
        "summary": "The demo guest through a view (flat keys)",
        "description": "The demo's example view `web_offer` (`enrich views show web_offer`): "
        "the fixed keys, `segments`, and traits and metrics renamed to flat keys, with "
        "defaults for a guest who lacks them.",
        "value": {"identifiers": {"email": "demo@example.com"}, "view": "web_offer"},
    },
    "unknown_guest": {
        "summary": "An unknown guest (found: false)",
        "description": "No profile has this identifier: 200 with `found: false` and empty "
        "values, so the Connection's output mapping never breaks.",
        "value": {"identifiers": {"email": "nobody@example.com"}},
    },
}
# The demo's guest who denied marketing, through the demo view with that purpose.
NO_CONSENT_ANSWER: dict[str, Any] = {
    "found": True,
    "matched": "email",
    "profile_id": None,
    "segments": ["anonymous"],
    "tier": "none",
    "first_name": None,
    "lifetime_value": 0,
    "updated_at": None,
    "consent": {"purpose": "marketing", "status": "denied"},
    "stale": False,
}
REQUEST_EXAMPLES["no_consent"] = {
    "summary": "A guest who denied the view's purpose (consent)",
    "description": "The demo's view `email_offer` serves the consent purpose `marketing`; "
    "the demo guest `optout@example.com` denied it: found, but no personal data.",
    "value": {"identifiers": {"email": "optout@example.com"}, "view": "email_offer"},
}
ANSWER_EXAMPLES: dict[str, dict[str, Any]] = {
    "demo_guest": {"summary": "A known guest (trimmed to `fields`)", "value": DEMO_ANSWER},
    "demo_view": {"summary": "A known guest through a view", "value": DEMO_VIEW_ANSWER},
    "unknown_guest": {"summary": "An unknown guest", "value": UNKNOWN_ANSWER},
    "no_consent": {
        "summary": "A known guest without consent to the request's purpose",
        "description": "The view's (or the client's) consent purpose was denied, or never "
        "granted where it is opt-in: the usual keys, `found: true`, no personal data "
        "(`profile_id` and `updated_at` null, the view's defaults), and `consent` saying why.",
        "value": NO_CONSENT_ANSWER,
    },
}
CONSENT_DESCRIPTION = (
    "present only when the guest has not consented to the request's purpose (the view's, else "
    "the client's default purpose): `purpose`, and `status` `denied` or `not_granted` (an "
    "opt-in purpose never granted); the answer then holds no personal data"
)


class ConsentMarker(BaseModel):
    """Why a found guest's answer holds no personal data."""

    purpose: str = Field(description="the consent purpose the request serves")
    status: Literal["denied", "not_granted"] = Field(
        description="`denied`, or `not_granted`: an opt-in purpose the guest never granted"
    )


# The ``fields`` parameter's schema (the service checks the names: an unknown one is a 422).
FIELDS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "array",
            "maxItems": MAX_FIELDS_ITEMS,
            "items": {**FIELDS_STRING_SCHEMA, "maxLength": MAX_FIELDS_ITEM},
        },
        FIELDS_STRING_SCHEMA,
        {"type": "null"},
    ]
}


class EnrichRequest(BaseModel):
    """Identifiers to try in order, and optionally the fields the answer should carry.

    Unknown top-level members are refused (422): a misspelt ``identifier`` or ``field`` would
    otherwise answer ``found: false`` or an untrimmed answer without saying why, which is
    harder to debug from a Connection's Test button than a clear error.
    """

    model_config = ConfigDict(extra="forbid")

    # The key and value rules are checked by the service (an invalid type name is a 400, as on
    # GET); the schema only documents them.
    identifiers: dict[str, Any] = Field(
        max_length=MAX_IDENTIFIERS,
        description=IDENTIFIERS_DESCRIPTION,
        json_schema_extra={"propertyNames": {"pattern": TYPE_NAME_PATTERN}},
    )
    fields: list[str] | str | None = Field(
        default=None,
        description=FIELDS_DESCRIPTION,
        json_schema_extra=FIELDS_SCHEMA,
    )
    view: str | None = Field(
        default=None,
        max_length=VIEW_REF_MAX_CHARS,
        description=VIEW_DESCRIPTION,
        json_schema_extra={"pattern": VIEW_REF_PATTERN},
    )


class EnrichAnswer(BaseModel):
    """Always these keys, known guest or not; ``truncated`` only when lists were cut."""

    found: bool = Field(description="whether a profile matched")
    matched: str | None = Field(description="the type of the identifier that matched")
    profile_id: str | None = Field(
        description="the matched profile's id (null without consent to the request's purpose)"
    )
    traits: dict[str, Any] = Field(description="the profile's traits (trimmed to `fields`)")
    segments: list[str] = Field(description="the profile's segments")
    metrics: dict[str, Any] = Field(
        description="numbers and timestamps: order_count, lifetime_value, last_order_at, ..."
    )
    recommendations: list[dict[str, Any]] = Field(description="recommended items, best first")
    updated_at: datetime | None = Field(description="when the profile last changed")
    consent: ConsentMarker | None = Field(default=None, description=CONSENT_DESCRIPTION)
    stale: bool = Field(
        description="true when the database did not answer in time and a cached copy was used"
    )
    truncated: bool | None = Field(
        default=None, description="present (true) only when lists were cut to fit the size cap"
    )


class ViewAnswer(BaseModel):
    """The answer for a view: always the fixed keys, then the view's own: the roots it leaves
    nested (``traits``, ``metrics``, ``segments``, ``recommendations``, as ``fields`` trims
    them) and its flat keys (each always present: the value, the view's default, or null)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    found: bool = Field(description="whether a profile matched")
    matched: str | None = Field(description="the type of the identifier that matched")
    profile_id: str | None = Field(
        description="the matched profile's id (null without consent to the request's purpose)"
    )
    updated_at: datetime | None = Field(description="when the profile last changed")
    consent: ConsentMarker | None = Field(default=None, description=CONSENT_DESCRIPTION)
    stale: bool = Field(
        description="true when the database did not answer in time and a cached copy was used"
    )
    truncated: bool | None = Field(
        default=None, description="present (true) only when values were cut to fit the size cap"
    )
