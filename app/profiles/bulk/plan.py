"""What a bulk batch will do: each record's target profile, decided before anything is written.

``make_plan`` applies the PUT's rules to a whole batch at once (see app/profiles/bulk/upsert.py)
and ``Store`` is what a backend must offer to carry the plan out.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from app.identity.identifiers import Key
from app.profiles.documents import PreparedProfile

Status = Literal["created", "updated", "unchanged", "failed"]
NO_IDENTIFIERS = "a profile needs at least one identifier"


@dataclass
class RecordOutcome:
    index: int
    status: Status
    error: str | None = None


@dataclass
class BulkResult:
    created: int
    updated: int
    unchanged: int
    failed: int
    results: list[RecordOutcome]
    # Every identifier of every created or updated profile: the cache entries to drop.
    changed_keys: list[Key]


@dataclass
class Target:
    """One profile the batch writes: its final content and the identifiers it gains."""

    profile_id: uuid.UUID
    is_new: bool
    content: PreparedProfile
    # The event metrics of every record for this profile, merged; None: the content's own.
    merged: dict[str, Any] | None = None
    new_keys: list[Key] = field(default_factory=list)

    @property
    def columns(self) -> dict[str, Any]:
        # Read lazily: an encoded record rebuilds its columns from text only when asked.
        return self.merged if self.merged is not None else self.content.columns

    @property
    def final(self) -> PreparedProfile:
        """The content with the event metrics of every record for this profile merged."""
        content = self.content
        return PreparedProfile(
            keys=content.keys,
            traits=content.traits,
            segments=content.segments,
            metrics=content.metrics,
            recommendations=content.recommendations,
            source=content.source,
            columns=self.columns,
        )


@dataclass
class Plan:
    targets: dict[uuid.UUID, Target]
    # (record index, profile it lands on, whether it is the record that creates that profile)
    landings: list[tuple[int, uuid.UUID, bool]]
    failures: list[RecordOutcome]

    @property
    def created(self) -> list[Target]:
        return [t for t in self.targets.values() if t.is_new]

    @property
    def existing(self) -> list[Target]:
        return [t for t in self.targets.values() if not t.is_new]


class Store(Protocol):
    """The statements of one backend (app/profiles/bulk/pg.py, app/profiles/bulk/sqlite.py)."""

    # What the database (or the driver, encoding a value) refuses in a record's own data, so
    # that the batch can be rolled back to its savepoint and the record found; empty where
    # there is no savepoint to return to (SQLite: validation is all there is).
    refused: tuple[type[Exception], ...]

    async def owners(self, keys: Sequence[Key]) -> dict[Key, uuid.UUID]: ...

    def serialize(self, records: Sequence[tuple[int, PreparedProfile]]) -> None:
        """Get the records ready for writing (called while ``owners`` runs)."""
        ...

    async def lock(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        """Lock the profiles about to be updated; return the ones that still exist."""
        ...

    async def write(self, plan: Plan) -> set[uuid.UUID]:
        """Insert, add identifiers, update; return the existing profiles that changed."""
        ...

    async def keys_of(self, ids: Sequence[uuid.UUID]) -> list[Key]: ...

    def check_transaction(self) -> None:
        """Fail unless the statements will run inside the caller's transaction."""
        ...


def make_plan(records: Sequence[tuple[int, PreparedProfile]], owners: dict[Key, uuid.UUID]) -> Plan:
    """Decide, in record order, which profile each record lands on (or why it fails)."""
    owner_of = dict(owners)
    plan = Plan({}, [], [])
    for index, record in records:
        if not record.keys:
            plan.failures.append(RecordOutcome(index, "failed", NO_IDENTIFIERS))
            continue
        found: list[uuid.UUID] = []
        clash: Key | None = None
        for key in record.keys:
            owner = owner_of.get(key)
            if owner is None or owner in found:
                continue
            if found:
                clash = key
                break
            found.append(owner)
        if clash is not None:
            message = f"identifier {clash[0]} {clash[1]!r} belongs to another profile"
            plan.failures.append(RecordOutcome(index, "failed", message))
            continue
        target = plan.targets.get(found[0]) if found else None
        creates = False
        if target is None:
            if found:
                profile_id = found[0]
            else:
                # The reader process may have picked the id (and written the rows with it).
                profile_id = getattr(record, "candidate", None) or new_profile_id()
            creates = not found
            # Shared with the record until a second record lands on this profile.
            target = Target(profile_id, creates, record)
            plan.targets[profile_id] = target
        else:
            target.merged = {**target.columns, **record.columns}
            target.content = record
        for key in record.keys:
            if key not in owner_of:
                owner_of[key] = target.profile_id
                target.new_keys.append(key)
        plan.landings.append((index, target.profile_id, creates))
    return plan


def new_profile_id() -> uuid.UUID:
    """A UUIDv7 layout: time first, then 74 random bits.

    Profiles created together sit together in the primary key and in the identifiers'
    profile_id index, which keeps large loads from touching index pages at random.
    """
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))
    value = (millis << 80) | (0x7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0b10 << 62)
    return uuid.UUID(int=value | (rand & 0x3FFF_FFFF_FFFF_FFFF))


def outcomes(plan: Plan, changed: set[uuid.UUID], keys: list[Key]) -> BulkResult:
    results = list(plan.failures)
    for index, profile_id, creates in plan.landings:
        target = plan.targets[profile_id]
        status: Status
        if creates:
            status = "created"
        elif target.is_new or profile_id in changed:
            status = "updated"
        else:
            status = "unchanged"
        results.append(RecordOutcome(index, status))
    results.sort(key=lambda outcome: outcome.index)
    counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0}
    for outcome in results:
        counts[outcome.status] += 1
    return BulkResult(results=results, changed_keys=list(dict.fromkeys(keys)), **counts)
