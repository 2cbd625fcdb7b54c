"""Events as a Triggered Experience destination sends them, and the acknowledgement.

The JSON Schema published for ``EventIn`` states the same rules the validators apply (see
``app/core/patterns.py``), including the amount a purchase needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from app.core.openapi import PURPOSES_MARK
from app.core.patterns import (
    ABSENT_TEXT_PATTERN,
    TYPE_NAME_PATTERN,
    W,
    absent_or_present_pattern,
    any_case,
    compiled,
    present_text_pattern,
)
from app.identity.identifiers import MAX_VALUE_LENGTH, is_absent
from app.profiles.consent import ConsentDecision, check_purposes
from app.profiles.limits import check_document
from app.profiles.schemas import MAX_MONEY, fit_ints

PURCHASE = "purchase"
CONSENT = "consent"
MAX_EVENT_ID = 200
MAX_TYPE = 64
MAX_IDENTIFIERS = 32
# A plain decimal, up to MAX_MONEY (1e14): what a template fills in, never an exponent.
AMOUNT_PATTERN = f"^{W}*\\+?0*(?:[0-9]{{1,14}}(?:\\.[0-9]+)?|100000000000000(?:\\.0+)?){W}*$"
AMOUNT_RULE = compiled(AMOUNT_PATTERN)
# RFC 3339 (a space or a lower-case t and z allowed); no offset means UTC.
TIMESTAMP_PATTERN = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]+)?"
    "(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?$"
)
TIMESTAMP_RULE = compiled(TIMESTAMP_PATTERN)

_ABSENT_TEXT: dict[str, Any] = {"type": "string", "pattern": ABSENT_TEXT_PATTERN}
_ABSENT: dict[str, Any] = {"anyOf": [{"type": "null"}, _ABSENT_TEXT]}
_AMOUNT = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_MONEY},
        {"type": "string", "pattern": AMOUNT_PATTERN},
    ],
    "description": "a number or a plain decimal string, 0 to 1e14",
}
EVENT_SCHEMA: dict[str, Any] = {
    "allOf": [
        {
            # A purchase (any letter case, blanks around) needs data.amount.
            "if": {
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "pattern": f"^{W}*{any_case(PURCHASE)}{W}*$"}
                },
            },
            "then": {
                "required": ["data"],
                "properties": {"data": {"required": ["amount"], "properties": {"amount": _AMOUNT}}},
            },
        },
        {
            # A consent event needs data.purpose (a configured one) and data.status.
            "if": {
                "required": ["type"],
                "properties": {
                    "type": {"type": "string", "pattern": f"^{W}*{any_case(CONSENT)}{W}*$"}
                },
            },
            "then": {
                "required": ["data"],
                "properties": {
                    "data": {
                        "required": ["purpose", "status"],
                        "properties": {
                            "purpose": {"type": "string", PURPOSES_MARK: "enum"},
                            "status": {"type": "string", "enum": ["granted", "denied"]},
                            "source": {
                                "anyOf": [{"type": "string", "maxLength": 100}, {"type": "null"}]
                            },
                        },
                    }
                },
            },
        },
    ],
    "examples": [
        {
            "event_id": "ord-2026-000123",
            "type": "purchase",
            "identifiers": {"guest_ref": "demo-guest", "email": "demo@example.com"},
            "occurred_at": "2026-11-28T14:05:00Z",
            "data": {"amount": "49.90", "currency": "EUR", "order_id": "123"},
        },
        {
            "event_id": "cmp-2026-000042",
            "type": "consent",
            "identifiers": {"guest_ref": "demo-guest"},
            "occurred_at": "2026-11-28T14:06:00Z",
            "data": {"purpose": "marketing", "status": "denied", "source": "cookie_banner"},
        },
    ],
}


def _documented(*choices: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Publish ``choices`` instead of the generated schema, whose length limits apply after
    the value is stripped (a raw string may be longer than ``maxLength``)."""

    def replace(schema: dict[str, Any]) -> None:
        description = schema.get("description")
        schema.clear()
        schema["anyOf"] = list(choices)
        if description:
            schema["description"] = description

    return replace


def _text(value: Any) -> Any:
    """Numbers are taken as strings; an unfilled ``${...}`` is as good as missing."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        return None if is_absent(value) else value.strip()
    return value


def _timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (no offset: UTC), or absent; nothing else (no epoch numbers)."""
    if value is None or (isinstance(value, str) and is_absent(value)):
        return None
    if not isinstance(value, str) or not TIMESTAMP_RULE.match(value):
        raise ValueError("occurred_at must be an RFC 3339 timestamp, e.g. 2026-11-28T14:05:00Z")
    text = value.upper().replace("Z", "+00:00")
    date, _, rest = text.replace(" ", "T").partition("T")
    clock, dot, fraction = rest[:8], rest[8:9], rest[9:]
    offset = ""
    if dot == ".":
        digits = re.match("[0-9]+", fraction)
        assert digits is not None
        offset = fraction[digits.end() :]
        clock += "." + digits.group()[:6].ljust(6, "0")
    else:
        offset = rest[8:]
    try:
        moment = datetime.fromisoformat(f"{date}T{clock}{offset}")
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"occurred_at {value[:40]!r} is not a valid time") from exc


def consent_of(data: dict[str, Any]) -> tuple[str, ConsentDecision]:
    """A consent event's purpose and decision (``at`` is set from ``occurred_at``)."""
    purpose = data.get("purpose")
    if not isinstance(purpose, str):
        raise ValueError("a consent event needs data.purpose, a configured purpose")
    check_purposes([purpose])
    status = data.get("status")
    if status not in ("granted", "denied"):
        raise ValueError('a consent event needs data.status, "granted" or "denied"')
    source = data.get("source")
    if source is not None and (not isinstance(source, str) or len(source) > 100):
        raise ValueError("data.source of a consent event is text of at most 100 characters")
    return purpose, ConsentDecision(status=status, source=source)


def amount_of(value: Any) -> Decimal:
    """A purchase amount: a number or a plain decimal string, finite and from 0 to 1e14."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("data.amount must be a number or a numeric string")
    if isinstance(value, str) and not AMOUNT_RULE.match(value):
        raise ValueError(f"data.amount {value[:40]!r} is not a plain decimal number")
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else str(value))
    except InvalidOperation as exc:
        raise ValueError(f"data.amount {str(value)[:40]!r} is not a number") from exc
    if not amount.is_finite() or amount < 0:
        raise ValueError("data.amount must be a finite number >= 0")
    if amount > Decimal(str(MAX_MONEY)):
        raise ValueError("data.amount is too large")
    return amount


class EventIn(BaseModel):
    """One event; ``event_id`` makes a retried delivery a duplicate."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=EVENT_SCHEMA)

    event_id: Annotated[
        str, BeforeValidator(_text), Field(min_length=1, max_length=MAX_EVENT_ID)
    ] = Field(
        description="unique per event: a repeat is a duplicate (numbers are taken as strings)",
        json_schema_extra=_documented(
            {"type": "string", "pattern": present_text_pattern(MAX_EVENT_ID)},
            {"type": "number"},
        ),
    )
    type: Annotated[str, BeforeValidator(_text), Field(min_length=1, max_length=MAX_TYPE)] = Field(
        description="`purchase` (needs `data.amount`), `consent` (needs `data.purpose` and "
        "`data.status`) or any other name (case-insensitive)",
        json_schema_extra=_documented(
            {"type": "string", "pattern": present_text_pattern(MAX_TYPE)},
            {"type": "number"},
        ),
    )
    identifiers: dict[str, Any] = Field(
        max_length=MAX_IDENTIFIERS,
        description="identifier type -> value, at least one with a value; the first that "
        "belongs to a profile names the guest, the others join that profile",
        json_schema_extra={
            "propertyNames": {"pattern": TYPE_NAME_PATTERN},
            "additionalProperties": {
                "anyOf": [
                    {"type": "null"},
                    {"type": "number"},
                    {"type": "string", "pattern": absent_or_present_pattern(MAX_VALUE_LENGTH)},
                ]
            },
            "not": {"additionalProperties": _ABSENT},
        },
    )
    occurred_at: Annotated[datetime | None, BeforeValidator(_timestamp)] = Field(
        default=None,
        description="RFC 3339; without an offset: UTC; omitted, null, empty or an unfilled "
        "`${...}`: the time of receipt",
        json_schema_extra={
            "anyOf": [
                {"type": "string", "format": "date-time"},
                _ABSENT_TEXT,
                {"type": "null"},
            ]
        },
    )
    data: dict[str, Any] = Field(
        default_factory=dict,
        description="anything the event carries; a purchase's `amount` (and `currency`); a "
        "consent event's `purpose` (a configured one), `status` (`granted` or `denied`) and "
        "optional `source`, decided at `occurred_at`",
    )

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        """The whole event, ``data`` at any depth, walked once before pydantic (see limits)."""
        if isinstance(data, dict) and check_document(data) and "data" in data:
            fit_ints(data["data"], "data")  # as stored, and written back by orjson
        return data

    @model_validator(mode="after")
    def _check(self) -> EventIn:
        self.type = self.type.lower()
        if self.type == PURCHASE:
            if "amount" not in self.data or is_absent(self.data["amount"]):
                raise ValueError("a purchase needs data.amount")
            amount_of(self.data["amount"])
        elif self.type == CONSENT:
            consent_of(self.data)
        return self

    @property
    def amount(self) -> Decimal | None:
        return amount_of(self.data["amount"]) if self.type == PURCHASE else None


class EventAck(BaseModel):
    """202 for a new event (after it is committed), 200 with ``duplicate: true`` for a repeat."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "accepted": True,
                    "duplicate": False,
                    "event_id": "ord-2026-000123",
                    "profile_id": "1b0e8c8a-4c1f-4b7e-9d54-2f1e9a3c7d10",
                }
            ]
        }
    )

    accepted: bool = True
    duplicate: bool = Field(description="true when this event_id was processed before")
    event_id: str
    profile_id: str | None = Field(description="the profile the event counted for")
