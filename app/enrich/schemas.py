"""The Connection endpoint's request and answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# A guest has a handful of identifiers; a request naming more is not a lookup.
MAX_IDENTIFIERS = 32


class EnrichRequest(BaseModel):
    """Identifiers to try in order, and optionally the fields the answer should carry.

    Unknown top-level members are refused (422): a misspelt ``identifier`` or ``field`` would
    otherwise answer ``found: false`` or an untrimmed answer without saying why, which is
    harder to debug from a Connection's Test button than a clear error.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "identifiers": {"guest_ref": "${guest.ref}", "email": "${guest.email}"},
                    "fields": ["traits.tier", "metrics.lifetime_value", "segments"],
                }
            ]
        },
    )

    identifiers: dict[str, Any] = Field(
        max_length=MAX_IDENTIFIERS,
        description="type -> value, tried in this order; empty values and ${...} are skipped",
    )
    fields: list[str] | str | None = Field(
        default=None,
        description="dot paths (traits.tier, metrics.order_count, segments, recommendations), "
        "as a list or a comma-separated string",
    )


class EnrichAnswer(BaseModel):
    """Always these keys, known guest or not; ``truncated`` only when lists were cut."""

    found: bool
    matched: str | None = Field(description="the type of the identifier that matched")
    profile_id: str | None
    traits: dict[str, Any]
    segments: list[str]
    metrics: dict[str, Any]
    recommendations: list[dict[str, Any]]
    updated_at: datetime | None
    stale: bool
    truncated: bool | None = Field(default=None, description="present (true) only when cut")
