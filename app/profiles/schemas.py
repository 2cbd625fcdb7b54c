"""Profile documents as callers write them and as the API reads them back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

# Metrics written by purchase events; kept in columns so they update atomically.
EVENT_METRICS = ("order_count", "lifetime_value", "last_order_at", "last_event_at")
TIMESTAMP_METRICS = ("last_order_at", "last_event_at")


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


class ProfileRead(BaseModel):
    """A whole profile with all its identifiers."""

    profile_id: str
    identifiers: dict[str, str]
    traits: dict[str, Any]
    segments: list[str]
    metrics: dict[str, Any]
    recommendations: list[dict[str, Any]]
    source: str | None
    created_at: datetime
    updated_at: datetime
    version: int
