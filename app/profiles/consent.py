"""Consent per purpose: a decision as callers write it, and the rule that merges decisions.

A profile's ``consent`` maps a purpose to the guest's latest decision:
``{"marketing": {"status": "denied", "at": "2026-05-01T10:00:00Z", "source": "cmp"}}``.
Decisions arrive from several sources and out of order (a consent platform, the CRM, events),
so a decision replaces the stored one for its purpose only when it is at least as recent
(``at``); an older one changes nothing and is not recorded. A decision is never removed:
a withdrawal is a ``denied`` decision. Purposes are the configured ones
(``ENRICH_CONSENT_PURPOSES``, ``app.core.purposes``); a write naming another is a 422.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.core.models.base import as_utc, iso, utcnow
from app.core.purposes import DEFAULT_PURPOSES, Rules, parse_purposes
from app.profiles.repository import ProfileRepository

GRANTED, DENIED = "granted", "denied"
Status = Literal["granted", "denied"]

_active: Rules = parse_purposes(DEFAULT_PURPOSES)


def configure(rules: Rules) -> None:
    """Apply the process's purposes (from its settings) to every write checked from now on."""
    global _active
    _active = dict(rules)


def rules() -> Rules:
    """The configured purposes: purpose -> whether it is opt-in."""
    return _active


def check_purposes(purposes: Any) -> None:
    """A ValueError naming the first purpose that is not configured."""
    for purpose in purposes:
        if purpose not in _active:
            known = ", ".join(sorted(_active)) or "none"
            raise ValueError(f"unknown consent purpose {str(purpose)[:40]!r} (known: {known})")


# RFC 3339 (a space or a lower-case t and z allowed; no offset means UTC), nothing else: no
# epoch numbers, no bare dates.
AT_PATTERN = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\\.[0-9]+)?"
    "(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?$"
)
_AT_RULE = re.compile(AT_PATTERN)


def _rfc3339(value: Any) -> Any:
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _AT_RULE.match(value):
        raise ValueError("at must be an RFC 3339 timestamp, e.g. 2026-05-01T10:00:00Z")
    return value


class ConsentDecision(BaseModel):
    """One purpose's decision, as a write carries it."""

    model_config = ConfigDict(extra="forbid")

    status: Status = Field(description="`granted` or `denied`")
    at: Annotated[datetime | None, BeforeValidator(_rfc3339)] = Field(
        default=None,
        json_schema_extra={
            "anyOf": [
                {"type": "string", "format": "date-time", "pattern": AT_PATTERN},
                {"type": "null"},
            ]
        },
        description="when the guest decided (RFC 3339; default: when the write is received); "
        "a decision older than the stored one for its purpose changes nothing",
    )
    source: str | None = Field(
        default=None,
        max_length=100,
        description="who recorded it, e.g. `cmp`; default: the document's `source`",
    )

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)


@dataclass(frozen=True)
class Change:
    """One decision that took effect (what the consent history records)."""

    purpose: str
    status: str
    at: datetime
    source: str | None


def merged(
    stored: Mapping[str, Any] | None,
    decisions: Mapping[str, ConsentDecision],
    *,
    now: datetime,
    source: str | None = None,
) -> tuple[dict[str, Any], list[Change]]:
    """The consent after ``decisions``, and the changes that took effect.

    Per purpose: a decision at least as recent as the stored one replaces it (the later write
    wins a tie), unless it says the same; an older one is ignored.
    """
    result = dict(stored or {})
    changes: list[Change] = []
    for purpose, decision in decisions.items():
        at = decision.at or as_utc(now)
        entry = {"status": decision.status, "at": iso(at), "source": decision.source or source}
        old = result.get(purpose)
        if old is not None:
            if old == entry or at < _stored_at(old):
                continue
        result[purpose] = entry
        changes.append(Change(purpose, decision.status, at, entry["source"]))
    return result, changes


def _stored_at(entry: Mapping[str, Any]) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(str(entry.get("at"))))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)  # unreadable: any decision replaces it


def statuses(consent: Mapping[str, Any] | None) -> dict[str, str]:
    """Purpose -> status: all the enrich cache keeps of consent (it decides per request)."""
    if not consent:
        return {}
    return {
        purpose: entry["status"]
        for purpose, entry in consent.items()
        if isinstance(entry, dict) and "status" in entry
    }


def change(
    stored: Mapping[str, Any] | None,
    decisions: Mapping[str, ConsentDecision] | None,
    source: str | None,
    channel: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``{"consent": ...}`` to write when ``decisions`` change the stored consent (else empty),
    and the consent history rows of the changes (``channel``: api, bulk or event)."""
    if not decisions:
        return {}, []
    now = utcnow()
    consent, changes = merged(stored, decisions, now=now, source=source)
    history = [
        {
            "purpose": item.purpose,
            "status": item.status,
            "at": item.at,
            "source": item.source,
            "channel": channel,
            "recorded_at": now,
        }
        for item in changes
    ]
    return ({"consent": consent} if changes else {}), history


async def record(
    repo: ProfileRepository,
    profile_id: uuid.UUID,
    decisions: Mapping[str, ConsentDecision],
    source: str | None,
    channel: str,
) -> bool:
    """Merge ``decisions`` into a stored profile's consent (its row locked; a new version when
    they change it), with their history. Whether they changed it."""
    stored = await repo.consent_of(profile_id)
    if stored is None:
        return False
    fresh, history = change(stored, decisions, source, channel)
    if fresh:
        await repo.update(profile_id, fresh)
        await repo.add_consent_history(profile_id, history)
    return bool(fresh)
