"""The relay's request: the guest's identifiers in our store, and the callFlows request.

The ``personalize`` member is the body of Personalize's ``POST /v2/callFlows`` as Sitecore
documents it ("Personalize API Flow execution", "Call the Personalize API" on
doc.sitecore.com): ``clientKey``, ``channel``, ``language``, ``currencyCode``,
``pointOfSale``, ``friendlyId``, exactly one of ``browserId``, ``email`` or ``identifiers``
(``{"provider", "id"}``), and custom data in the ``params`` object. It is checked here so a
mistake is a clear 422 from us rather than a 400 from Personalize after a network round trip.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.core.patterns import TYPE_NAME_PATTERN
from app.enrich.schemas import (
    FIELDS_DESCRIPTION,
    FIELDS_SCHEMA,
    IDENTIFIERS_DESCRIPTION,
    MAX_IDENTIFIERS,
)
from app.profiles.limits import UnstorableError
from app.profiles.schemas import fit_ints

# Where the guest's fields go inside `params`; a caller's own params may not use the name.
GUEST_PARAM = "enrich"
GUEST_IDS = ("browserId", "email", "identifiers")
# Something before and after one @, without control characters or white space. Spelled out
# rather than `\s`: the schema's pattern is read as ECMA-262 by callers' generators and as Rust
# regex by pydantic, and their `\s` differ (U+0085 and U+001C..U+001F are white space in one only).
_NOT_IN_EMAIL = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
EMAIL_PATTERN = rf"^[^@{_NOT_IN_EMAIL}]+@[^@{_NOT_IN_EMAIL}]+$"


class PersonalizeIdentifier(BaseModel):
    """A guest identifier in Personalize's own terms (its identity rules' provider)."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1, max_length=128, examples=["BXLP"])
    id: str = Field(min_length=1, max_length=256, examples=["123456"])


def _one_of_schema(schema: dict[str, Any]) -> None:
    """State in the schema what the validator enforces: exactly one guest id, none null."""
    properties = schema["properties"]
    for name in (*GUEST_IDS, "params"):
        variants = properties[name].pop("anyOf")
        properties[name].update(next(v for v in variants if v.get("type") != "null"))
        properties[name].pop("default", None)
    properties["params"]["not"] = {"required": [GUEST_PARAM]}
    schema["oneOf"] = [{"required": [name]} for name in GUEST_IDS]


class CallFlows(BaseModel):
    """The body for Personalize's ``POST /v2/callFlows``, sent on with ``params`` filled."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_of_schema)

    clientKey: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="The client key of the Personalize tenant (no Authorization header is used)",
    )
    channel: str = Field(
        pattern=r"^[A-Z][A-Z_]{0,31}$", description="Upper case: `WEB`, `MOBILE_APP`, ..."
    )
    language: str = Field(pattern=r"^[A-Za-z]{2}$", description="ISO 639, two letters")
    currencyCode: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, three letters")
    pointOfSale: str = Field(min_length=1, max_length=128)
    friendlyId: str = Field(
        pattern=r"^[a-z0-9_]{1,128}\*?$",
        description="The experience's friendly id (lower case, digits, `_`; a final `*` "
        "runs the first live match, as Personalize documents)",
    )
    browserId: str | None = Field(default=None, min_length=1, max_length=128)
    email: str | None = Field(default=None, min_length=3, max_length=254, pattern=EMAIL_PATTERN)
    identifiers: PersonalizeIdentifier | None = None
    params: dict[str, Any] | None = Field(
        default=None,
        description=f"Your own custom data; `params.{GUEST_PARAM}` is where the relay puts the "
        "guest's fields, so your params may not use that name",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            nulls = [name for name in (*GUEST_IDS, "params") if name in data and data[name] is None]
            if nulls:
                raise ValueError(f"{', '.join(nulls)} may not be null: leave it out")
        return data

    @model_validator(mode="after")
    def _one_guest_id(self) -> CallFlows:
        given = [name for name in GUEST_IDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of browserId, email or identifiers"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.params is not None and GUEST_PARAM in self.params:
            raise ValueError(f"params.{GUEST_PARAM} is where the relay puts the guest's fields")
        return self

    @model_validator(mode="after")
    def _sendable(self) -> CallFlows:
        # An integer past 64 bits goes on as a float (JSON's number), as a profile write stores
        # it; one past a float's range, or a lone UTF-16 surrogate (``"\ud800"``), which
        # Python's JSON reader takes but no JSON writer sends on, is refused here, not a 500
        # at the relay.
        try:
            if self.params is not None:
                fit_ints(self.params, "params")
            orjson.dumps(self.model_dump(exclude_none=True))
        except (orjson.JSONEncodeError, UnstorableError) as exc:
            raise ValueError(f"a value cannot be sent on as JSON: {exc}") from None
        return self


CALL_EXAMPLE: dict[str, Any] = {
    "identifiers": {"email": "demo@example.com"},
    "fields": ["traits.tier", "segments"],
    "personalize": {
        "clientKey": "abBah8aelipaPeebae7roox2tiexoSee",
        "channel": "WEB",
        "language": "en",
        "currencyCode": "EUR",
        "pointOfSale": "myretailsite/ireland",
        "email": "demo@example.com",
        "friendlyId": "home_page_banner",
        "params": {"page": "/running/shoes"},
    },
}


class ExperienceCall(BaseModel):
    """Who the guest is in our store, what of them to send, and the callFlows request."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [CALL_EXAMPLE]})

    # As enrich's: the service checks the key and value rules (a bad type name is a 400).
    identifiers: dict[str, Any] = Field(
        max_length=MAX_IDENTIFIERS,
        description=IDENTIFIERS_DESCRIPTION,
        json_schema_extra={"propertyNames": {"pattern": TYPE_NAME_PATTERN}},
    )
    fields: list[str] | str | None = Field(
        default=None,
        description=FIELDS_DESCRIPTION.replace(
            "Omitted, empty or only placeholders: everything.",
            "Omitted: the service's default set (`ENRICH_EXPERIENCE_FIELDS`); empty or only "
            "placeholders: everything.",
        ),
        json_schema_extra=FIELDS_SCHEMA,
    )
    personalize: CallFlows
