"""Profile documents as callers write them and as the API reads them back."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

# (re-exported: profiles, events and enrich import the time helpers from here)
from app.core.models.base import as_utc as as_utc
from app.core.models.base import iso as iso
from app.core.openapi import PURPOSES_MARK
from app.core.patterns import TYPE_NAME_PATTERN, W, absent_or_present_pattern, compiled
from app.profiles.consent import ConsentDecision, check_purposes
from app.profiles.limits import INT_RANGE, check_document, fit_int

# Metrics written by purchase events; kept in columns so they update atomically.
EVENT_METRICS = ("order_count", "lifetime_value", "last_order_at", "last_event_at")
TIMESTAMP_METRICS = ("last_order_at", "last_event_at")
# What integers past 64 bits become floats in (orjson writes every answer); not identifiers.
CONTENT = ("traits", "segments", "metrics", "recommendations")
# Numeric(20, 4) holds 16 integer digits; stay well inside so a sum never overflows.
MAX_MONEY = 1e14


def metric_number(value: Any) -> Any:
    """Metrics are JSON numbers; numeric strings are accepted and converted (not booleans)."""
    if isinstance(value, bool):
        raise ValueError("a metric is a number or a timestamp, not a boolean")
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in text else number
    return value


def _no_bool(value: Any) -> Any:
    """Refuse a boolean where a number (or text) is due: JSON true is not 1."""
    if isinstance(value, bool):
        raise ValueError("must be a number or a string, not a boolean")
    return value


def _score(value: Any) -> Any:
    """A number, or a numeric string in the documented form (blanks around are fine)."""
    if isinstance(value, str):
        if not NUMERIC_RULE.match(value):
            raise ValueError("score must be a number or a numeric string")
        return float(value.strip())
    return _no_bool(value)


def fit_ints(value: Any, where: str = "a stored value") -> Any:
    """``value`` with every integer past 64 bits made a float, in place; returns it.

    Writes convert them already (where check_document finds them), but PostgreSQL's JSONB
    prints a large float such as 1e20 back as a 21-digit integer, which orjson could not write
    into an answer.
    """
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            children: list[tuple[Any, Any]] = list(item.items())
        elif isinstance(item, list):
            children = list(enumerate(item))
        else:  # a scalar where an object or a list belongs: pydantic refuses it next
            continue
        for key, child in children:
            if isinstance(child, int) and not isinstance(child, bool):
                if not INT_RANGE[0] <= child <= INT_RANGE[1]:
                    item[key] = fit_int(child, where)
            elif isinstance(child, dict | list):
                stack.append(child)
    return value


def finite(value: Any, where: str) -> Any:
    """A converted metric (``"1e999"`` is a numeric string) must still be a finite number."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} holds a number that is not finite")
    return value


# What the metrics schema documents: the lenient forms it lists are accepted, and a few more
# spellings (exponents, underscores) that a template never produces.
NUMERIC_TEXT = f"^{W}*[+-]?[0-9]{{1,15}}(?:\\.[0-9]{{1,15}})?{W}*$"
NUMERIC_RULE = compiled(NUMERIC_TEXT)
_TIMESTAMP = {"type": "string", "format": "date-time"}
METRICS_SCHEMA: dict[str, Any] = {
    "properties": {
        "order_count": {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                {"type": "string", "pattern": f"^{W}*\\+?[0-9]{{1,9}}{W}*$"},
                {"type": "null"},
            ]
        },
        "lifetime_value": {
            "anyOf": [
                {"type": "number", "minimum": -MAX_MONEY, "maximum": MAX_MONEY},
                {
                    "type": "string",
                    "pattern": f"^{W}*[+-]?[0-9]{{1,14}}(?:\\.[0-9]{{1,15}})?{W}*$",
                },
                {"type": "null"},
            ]
        },
        "last_order_at": {"anyOf": [_TIMESTAMP, {"type": "null"}]},
        "last_event_at": {"anyOf": [_TIMESTAMP, {"type": "null"}]},
    },
    "additionalProperties": {
        "anyOf": [
            {"type": "number"},
            {"type": "string", "pattern": NUMERIC_TEXT},
            _TIMESTAMP,
            {"type": "null"},
        ]
    },
}

MetricValue = Annotated[float | int | datetime | None, BeforeValidator(metric_number)]
IdentifierValue = Annotated[str | int, BeforeValidator(_no_bool)]


class Recommendation(BaseModel):
    """A recommended item; any extra fields are kept as they were sent."""

    model_config = ConfigDict(extra="allow")

    product_id: str | None = None
    score: Annotated[float | None, BeforeValidator(_score)] = Field(
        default=None,
        json_schema_extra={
            "anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": NUMERIC_TEXT},
                {"type": "null"},
            ]
        },
    )


class ProfileDocument(BaseModel):
    """What a CRM, a bulk load or a PUT writes."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "identifiers": {"email": "jane@example.com", "crm_id": "C-1001"},
                    "traits": {"first_name": "Jane", "tier": "gold", "loyalty_points": 4200},
                    "segments": ["high_value", "newsletter"],
                    "metrics": {"lifetime_value": 1830.5, "order_count": 14},
                    "recommendations": [{"product_id": "SKU-123", "score": 0.92}],
                    "source": "crm",
                    "consent": {
                        "personalization": {"status": "granted", "at": "2026-05-01T10:00:00Z"},
                        "marketing": {
                            "status": "denied",
                            "at": "2026-05-01T10:00:00Z",
                            "source": "cmp",
                        },
                    },
                }
            ]
        },
    )

    identifiers: dict[str, IdentifierValue] = Field(
        default_factory=dict,
        description="identifier type -> value (a string or an integer); types are `email`, "
        "`phone`, `crm_id`, `guest_ref`, `email_sha256` or custom `[a-z][a-z0-9_]{0,31}`, "
        "case-insensitive; values must be valid for their type (an email address, a phone "
        "number, 64 hex digits); empty values and `${...}` placeholders are ignored",
        json_schema_extra={
            "propertyNames": {"pattern": TYPE_NAME_PATTERN},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "pattern": absent_or_present_pattern(320)},
                    {"type": "integer"},
                ]
            },
        },
    )
    traits: dict[str, Any] = Field(
        default_factory=dict, description="any JSON members: name, tier, preferences, ..."
    )
    segments: list[str] = Field(default_factory=list, description="segment names")
    metrics: dict[str, MetricValue] = Field(
        default_factory=dict,
        description="numbers (numeric strings are converted) or RFC 3339 timestamps; "
        "`order_count` (a whole number), `lifetime_value`, `last_order_at` and `last_event_at` "
        "are also moved by purchase events",
        json_schema_extra=METRICS_SCHEMA,
    )
    recommendations: list[Recommendation] = Field(
        default_factory=list, description="recommended items, best first"
    )
    source: str | None = Field(
        default=None, max_length=100, description="where the data came from, e.g. crm"
    )
    consent: dict[str, ConsentDecision] = Field(
        default_factory=dict,
        json_schema_extra={PURPOSES_MARK: "propertyNames"},
        description="consent per purpose: purpose -> {`status`: `granted` or `denied`, `at`, "
        "`source`}; purposes are the configured ones (ENRICH_CONSENT_PURPOSES; another is a "
        "422). Merged per purpose into what is stored, never removed: a decision older than "
        "the stored one for its purpose changes nothing",
    )

    @field_validator("consent")
    @classmethod
    def _known_purposes(cls, value: dict[str, ConsentDecision]) -> dict[str, ConsentDecision]:
        check_purposes(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        """Walk the whole document once, before pydantic, whatever its depth (see limits)."""
        if isinstance(data, dict) and check_document(data):
            for name in CONTENT:
                if name in data:
                    fit_ints(data[name], name)
        return data

    @model_validator(mode="after")
    def _event_metrics(self) -> ProfileDocument:
        for name, value in list(self.metrics.items()):
            finite(value, f"metrics.{name}")
            if name in EVENT_METRICS:
                self.metrics[name] = event_metric(name, value)
        return self


def event_metric(name: str, value: Any) -> Any:
    """Check and normalize one of the four column-backed metrics (None clears it)."""
    if value is None:
        return None
    if name in TIMESTAMP_METRICS:
        if not isinstance(value, datetime):
            raise ValueError(f"metrics.{name} must be an ISO 8601 timestamp")
        return as_utc(value)
    if isinstance(value, datetime):
        raise ValueError(f"metrics.{name} must be a number")
    if name == "order_count":
        if float(value) != int(value) or value < 0:
            raise ValueError("metrics.order_count must be a whole number >= 0")
        if value > 2**31 - 1:
            raise ValueError("metrics.order_count is too large")
        return int(value)
    if abs(value) > MAX_MONEY:
        raise ValueError(f"metrics.{name} is too large")
    return value


class ProfileRead(BaseModel):
    """A whole profile with all its identifiers.

    ``identifiers`` maps each type to its value; a type the profile holds several values of
    (two emails, say) maps to the sorted list of them.
    """

    profile_id: str
    identifiers: dict[str, str | list[str]]
    traits: dict[str, Any]
    segments: list[str]
    metrics: dict[str, Any]
    recommendations: list[dict[str, Any]]
    source: str | None
    consent: dict[str, Any] = Field(
        default_factory=dict,
        description="the latest decision per purpose: {`status`, `at`, `source`}",
    )
    created_at: datetime
    updated_at: datetime
    version: int


class ProfileWritten(BaseModel):
    """What a write answers a client without ``profiles:read``: which profile, which version."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"profile_id": "1b0e8c8a-4c1f-4b7e-9d54-2f1e9a3c7d10", "version": 2}]
        }
    )

    profile_id: str
    version: int


class BulkRecord(BaseModel):
    """What happened to one record of a bulk request (``index`` counts from 0)."""

    index: int
    status: Literal["created", "updated", "unchanged", "failed"]
    error: str | None = None


class BulkOutcome(BaseModel):
    """The answer to a bulk request: totals and one outcome per record."""

    created: int
    updated: int
    unchanged: int
    failed: int
    results: list[BulkRecord]

    @field_validator("results")
    @classmethod
    def _by_index(cls, value: list[BulkRecord]) -> list[BulkRecord]:
        return sorted(value, key=lambda outcome: outcome.index)
