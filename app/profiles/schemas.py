"""Profile documents as callers write them and as the API reads them back."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

# Metrics written by purchase events; kept in columns so they update atomically.
EVENT_METRICS = ("order_count", "lifetime_value", "last_order_at", "last_event_at")
TIMESTAMP_METRICS = ("last_order_at", "last_event_at")
# Numeric(20, 4) holds 16 integer digits; stay well inside so a sum never overflows.
MAX_MONEY = 1e14


def _number(value: Any) -> Any:
    """Metrics are JSON numbers; numeric strings are accepted and converted."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in text else number
    return value


def check_storable(value: Any, where: str) -> None:
    """Refuse what JSON columns cannot hold: NaN or infinite numbers and NUL characters.

    Python's JSON parser accepts ``NaN``; PostgreSQL's JSONB refuses it and the NUL character,
    so they are payload errors here rather than database errors later.
    """
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{where} holds a number that is not finite")
        elif isinstance(item, str):
            if "\x00" in item:
                raise ValueError(f"{where} holds a NUL character")
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    raise ValueError(f"{where} holds a NUL character")
                stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(item)


def as_utc(moment: datetime) -> datetime:
    """Timestamps without a zone are taken as UTC; every stored timestamp is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z`` (SQLite hands back naive UTC values)."""
    return as_utc(moment).isoformat().replace("+00:00", "Z")


MetricValue = Annotated[float | int | datetime | None, BeforeValidator(_number)]
IdentifierValue = str | int


class Recommendation(BaseModel):
    """A recommended item; any extra fields are kept as they were sent."""

    model_config = ConfigDict(extra="allow")

    product_id: str | None = None
    score: float | None = None


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
                }
            ]
        },
    )

    identifiers: dict[str, IdentifierValue] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    segments: list[str] = Field(default_factory=list)
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    recommendations: list[Recommendation] = Field(default_factory=list)
    source: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _storable(self) -> ProfileDocument:
        check_storable(self.traits, "traits")
        check_storable(self.segments, "segments")
        check_storable([r.model_dump() for r in self.recommendations], "recommendations")
        check_storable(self.source, "source")
        check_storable(list(self.identifiers.values()), "identifiers")
        for name, value in list(self.metrics.items()):
            check_storable(value, f"metrics.{name}")
            if name in EVENT_METRICS:
                self.metrics[name] = _event_metric(name, value)
        return self


def _event_metric(name: str, value: Any) -> Any:
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
    created_at: datetime
    updated_at: datetime
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
