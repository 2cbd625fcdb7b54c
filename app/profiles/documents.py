"""From a validated profile document to stored values, and from a stored profile to its views.

The bulk engine and the resource API apply the same rules through these functions: the four
event-driven metrics go to columns (written only when the document names them), every other
metric stays in the JSON ``metrics`` column.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.core.models import Profile
from app.identity.identifiers import Key, write_keys
from app.profiles.consent import ConsentDecision
from app.profiles.schemas import EVENT_METRICS, ProfileDocument, as_utc, fit_ints, iso

MONEY_PLACES = Decimal("0.0001")  # the scale of Numeric(20, 4)


@dataclass
class PreparedProfile:
    """A document's content in storage form; ``columns`` holds only the metrics it names."""

    keys: list[Key]
    traits: dict[str, Any]
    segments: list[str]
    metrics: dict[str, Any]
    recommendations: list[dict[str, Any]]
    source: str | None
    columns: dict[str, Any] = field(default_factory=dict)
    # The consent decisions the document carries (None: none), merged per purpose into the
    # stored consent rather than replacing it (app/profiles/consent.py).
    consent: dict[str, ConsentDecision] | None = None

    def content(self) -> dict[str, Any]:
        """The JSON-backed fields, as ``Profile`` attributes."""
        return {
            "traits": self.traits,
            "segments": self.segments,
            "metrics": self.metrics,
            "recommendations": self.recommendations,
            "source": self.source,
        }


def column_value(name: str, value: Any) -> Any:
    """A metric as its column stores it (money quantized the way the column rounds)."""
    if value is None:
        return None
    if name == "lifetime_value":
        return Decimal(str(value)).quantize(MONEY_PLACES)
    if name == "order_count":
        return int(value)
    return as_utc(value)


def prepare(document: ProfileDocument, region: str, *, keys: bool = True) -> PreparedProfile:
    """Split a validated document into JSON content and column metrics; normalize identifiers.

    Raises IdentifierError for an identifier that cannot be of its type (``keys=False`` skips
    the identifiers, for callers that handle them themselves).
    """
    json_metrics: dict[str, Any] = {}
    columns: dict[str, Any] = {}
    dumped = document.model_dump(mode="json", include={"metrics"})["metrics"]
    for name, value in document.metrics.items():
        if name in EVENT_METRICS:
            columns[name] = column_value(name, value)
        else:
            json_metrics[name] = dumped[name]
    return PreparedProfile(
        keys=write_keys(document.identifiers, region) if keys else [],
        traits=document.model_dump(mode="json", include={"traits"})["traits"],
        segments=list(document.segments),
        metrics=json_metrics,
        recommendations=[
            r.model_dump(mode="json", exclude_unset=True) for r in document.recommendations
        ],
        source=document.source,
        columns=columns,
        consent=document.consent or None,
    )


def stored_column(profile: Profile, name: str) -> Any:
    """A column metric as read back, comparable with ``column_value`` output."""
    value = getattr(profile, name)
    if value is None:
        return None
    if name == "lifetime_value":
        return Decimal(value).quantize(MONEY_PLACES)
    if name == "order_count":
        return int(value)
    return as_utc(value)


def differs(profile: Profile, prepared: PreparedProfile) -> bool:
    """Whether writing ``prepared`` would change the stored profile's content."""
    if any(getattr(profile, name) != value for name, value in prepared.content().items()):
        return True
    return any(stored_column(profile, n) != v for n, v in prepared.columns.items())


def metrics_view(profile: Profile) -> dict[str, Any]:
    """JSON metrics plus the non-null column metrics, as JSON-ready values."""
    metrics = dict(profile.metrics or {})
    if profile.order_count is not None:
        metrics["order_count"] = int(profile.order_count)
    if profile.lifetime_value is not None:
        metrics["lifetime_value"] = float(profile.lifetime_value)
    if profile.last_order_at is not None:
        metrics["last_order_at"] = iso(profile.last_order_at)
    if profile.last_event_at is not None:
        metrics["last_event_at"] = iso(profile.last_event_at)
    return metrics


def identifiers_view(keys: Iterable[Key]) -> dict[str, str | list[str]]:
    """Type -> value, or type -> sorted values where the profile holds several of a type."""
    grouped: dict[str, list[str]] = {}
    for id_type, value in keys:
        grouped.setdefault(id_type, []).append(value)
    return {
        id_type: values[0] if len(values) == 1 else sorted(values)
        for id_type, values in sorted(grouped.items())
    }


def profile_view(profile: Profile, keys: Iterable[Key]) -> dict[str, Any]:
    """The whole profile as GET answers it (the ProfileRead shape)."""
    return {
        "profile_id": str(profile.id),
        "identifiers": identifiers_view(keys),
        "traits": fit_ints(profile.traits or {}),
        "segments": profile.segments or [],
        "metrics": fit_ints(metrics_view(profile)),
        "recommendations": fit_ints(profile.recommendations or []),
        "source": profile.source,
        "consent": profile.consent or {},
        "created_at": iso(profile.created_at),
        "updated_at": iso(profile.updated_at),
        "version": profile.version,
    }


def document_view(profile: Profile) -> dict[str, Any]:
    """The profile's content as a document without identifiers: the target of a merge patch."""
    return {
        "traits": profile.traits or {},
        "segments": profile.segments or [],
        "metrics": metrics_view(profile),
        "recommendations": profile.recommendations or [],
        "source": profile.source,
    }
