"""The set-based bulk upsert engine behind the bulk endpoint, ``enrich import`` and the demo.

One call upserts a batch in a handful of statements, whatever its size: resolve every
identifier at once, decide each record's fate in Python, then write the new profiles, the new
identifiers and the changed profiles in one statement each (COPY on PostgreSQL). The rules are
the PUT's: a record whose identifiers match nothing creates a profile; one that matches a
single profile replaces its traits, segments, metrics, recommendations and source, sets the
event-driven metrics only where it names them, and adds identifiers (never removes any); one
whose identifiers belong to two profiles fails. A record that would change nothing leaves the
profile alone (no new version), so loading the same data twice is a no-op. Records of one
batch are applied in order: two that share an identifier land on the same profile, the later
one winning. The engine never commits; its caller owns the transaction.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import ConflictError
from app.identity.identifiers import IdentifierError, Key
from app.profiles import consent
from app.profiles.bulk.pg import RETRYABLE, PgStore
from app.profiles.bulk.plan import BulkResult, Plan, RecordOutcome, Store, make_plan, outcomes
from app.profiles.bulk.sqlite import SqliteStore
from app.profiles.documents import PreparedProfile, prepare
from app.profiles.repository import ProfileRepository
from app.profiles.schemas import ProfileDocument

# A concurrent writer can take an identifier between our read and our write; the batch then
# starts over from a savepoint and sees that writer's result.
ATTEMPTS = 4


# What one batch wrote: its plan, the profiles it changed and the keys whose answers changed.
Written = tuple[Plan, set[uuid.UUID], list[Key]]


class Retry(Exception):
    """The data moved under the batch; start it over."""


async def upsert_documents(
    session: AsyncSession, documents: list[tuple[int, ProfileDocument]], *, region: str
) -> BulkResult:
    """Upsert validated documents; ``index`` is the caller's record number, echoed back."""
    items: list[tuple[int, PreparedProfile | str]] = []
    for index, document in documents:
        try:
            items.append((index, prepare(document, region)))
        except IdentifierError as exc:
            items.append((index, exc.message))
    return await upsert_prepared(session, items)


class SeenKeys:
    """The keys one import has written so far, when identifiers was empty at its start.

    Then a key this import has not seen is unowned: in the initial load (app/ingest/initial.py)
    nobody else can write identifiers, and otherwise the unique index catches another writer,
    after which the batch starts over with every key looked up, and so does the rest of the
    import. So a batch looks up only the keys it may have written before (an in-file repeat),
    which for an initial load is almost none, instead of every key. Only the keys' hashes are
    kept (set operations in C, about 60 bytes a key); a shared hash only costs a lookup. Past
    LIMIT keys every key is looked up again.
    """

    LIMIT = 5_000_000

    def __init__(self) -> None:
        self.hashes: set[int] = set()
        self.active = True

    def may_have(self, keys: set[Key]) -> list[Key]:
        """The keys of ``keys`` this import may have written."""
        hashes = set(map(hash, keys))
        if hashes.isdisjoint(self.hashes):
            self.hashes |= hashes
        else:
            hits = hashes & self.hashes
            self.hashes |= hashes
            return [key for key in keys if hash(key) in hits]
        if len(self.hashes) > self.LIMIT:
            self.active = False
            self.hashes = set()
        return []


async def upsert_prepared(
    session: AsyncSession,
    items: Sequence[tuple[int, PreparedProfile | str]],
    *,
    seen: SeenKeys | None = None,
    before_lookup: Callable[[], Awaitable[None]] | None = None,
) -> BulkResult:
    """Upsert prepared records; a string in place of a record is that record's error.

    ``seen``: look up only the keys it may hold (see SeenKeys); the importer passes it for a
    load into tables that held no identifiers when it started. ``before_lookup`` runs before
    any key is looked up (the initial load rebuilds the identifiers' indexes there).
    """
    failures = [RecordOutcome(i, "failed", item) for i, item in items if isinstance(item, str)]
    records = [(i, item) for i, item in items if not isinstance(item, str)]
    writer = _Writer(session, await _store(session), seen, before_lookup)
    result = await writer.write(records)
    if failures:
        result = combine([result, BulkResult(0, 0, 0, len(failures), failures, [])])
    return result


@dataclass
class _Writer:
    """One upsert call's session, store and options, for the steps that write its records."""

    session: AsyncSession
    store: Store
    seen: SeenKeys | None
    before_lookup: Callable[[], Awaitable[None]] | None

    async def write(self, records: Sequence[tuple[int, PreparedProfile]]) -> BulkResult:
        """Write ``records``; what the database refuses fails the record alone, not the batch.

        Validation stops every refusal known (app/profiles/limits.py), so this is the net under
        it: a batch the database refuses is rolled back to its savepoint and written again in
        halves until the refused records stand alone; each fails with the reason and the rest
        is written. About two batches' work for one such record; none at all otherwise.
        """
        try:
            plan, changed, keys = await self._retried(records)
        except self.store.refused as exc:
            if len(records) == 1:
                return BulkResult(
                    0, 0, 0, 1, [RecordOutcome(records[0][0], "failed", refusal(exc))], []
                )
            middle = len(records) // 2
            return combine([await self.write(records[:middle]), await self.write(records[middle:])])
        return outcomes(plan, changed, keys)

    async def _retried(self, records: Sequence[tuple[int, PreparedProfile]]) -> Written:
        """Attempt the batch until no concurrent writer moved its identifiers under it."""
        for attempt in range(ATTEMPTS):
            # After a conflict, someone else writes identifiers: look every key up from now on.
            if self.seen is not None and attempt:
                self.seen.active = False
            known = self.seen if self.seen is not None and self.seen.active else None
            try:
                return await self._attempt(records, known)
            except Retry as exc:
                if attempt == ATTEMPTS - 1:
                    raise ConflictError(
                        "the identifiers kept changing while this batch ran; retry it"
                    ) from exc
        raise AssertionError("unreachable")

    async def _attempt(
        self, records: Sequence[tuple[int, PreparedProfile]], seen: SeenKeys | None
    ) -> Written:
        """One attempt, in a savepoint on PostgreSQL; ``seen`` narrows the keys looked up."""
        # Sorted, so the index is walked in order rather than at random.
        every = {key for _, record in records for key in record.keys}
        wanted = sorted(every if seen is None else seen.may_have(every))
        if wanted and self.before_lookup is not None:
            # Before the savepoint: what it does (the initial load rebuilds the identifiers'
            # indexes) must outlive an attempt that is rolled back.
            await self.before_lookup()
        if self.session.get_bind().dialect.name != "postgresql":
            return await _run(self.store, records, wanted, self.session)
        try:
            async with self.session.begin_nested():
                # The SAVEPOINT (and the transaction) start only when a connection is asked
                # for; the store's statements bypass SQLAlchemy, so ask before they run.
                await self.session.connection()
                self.store.check_transaction()
                return await _run(self.store, records, wanted, self.session)
        except RETRYABLE as exc:
            raise Retry from exc


def refusal(exc: BaseException) -> str:
    """Why the database refused a record, by the error's kind (its text may quote the data)."""
    kind = re.sub(r"(?<!^)(?=[A-Z])", " ", type(exc).__name__.removesuffix("Error")).lower()
    return f"the database refused this record ({kind})"


def combine(parts: Sequence[BulkResult]) -> BulkResult:
    """One result for records written in several goes (each with its own outcomes)."""
    results = sorted((o for part in parts for o in part.results), key=lambda o: o.index)
    keys = [key for part in parts for key in part.changed_keys]
    return BulkResult(
        created=sum(p.created for p in parts),
        updated=sum(p.updated for p in parts),
        unchanged=sum(p.unchanged for p in parts),
        failed=sum(p.failed for p in parts),
        results=results,
        changed_keys=list(dict.fromkeys(keys)),
    )


async def _store(session: AsyncSession) -> Store:
    if session.get_bind().dialect.name == "postgresql":
        return await PgStore.open(session)

    return SqliteStore(session)


async def _run(
    store: Store,
    records: Sequence[tuple[int, PreparedProfile]],
    wanted: list[Key],
    session: AsyncSession,
) -> Written:
    lookup = asyncio.ensure_future(store.owners(wanted)) if wanted else None
    if lookup is not None:
        await asyncio.sleep(0)  # the query is on its way; serialize while the server works
    try:
        store.serialize(records)
    finally:
        owners = await lookup if lookup is not None else {}
    plan = make_plan(records, owners)
    existing = sorted(t.profile_id for t in plan.existing)
    if existing and await store.lock(existing) != set(existing):
        raise Retry  # erased since we looked: its identifiers are free again
    changed = await store.write(plan)
    changed |= await _consent(session, plan, records)
    keys = [key for t in plan.created for key in t.new_keys]
    if changed:
        keys.extend(await store.keys_of(sorted(changed)))
    return plan, changed, keys


async def _consent(
    session: AsyncSession, plan: Plan, records: Sequence[tuple[int, PreparedProfile]]
) -> set[uuid.UUID]:
    """Merge the consent decisions records carry into their profiles, in record order (after
    the batch is written, in its transaction): the existing profiles whose consent changed.
    A record without consent costs a dictionary test."""
    carrying = {index: record for index, record in records if record.consent}
    if not carrying:
        return set()
    repo = ProfileRepository(session)
    changed: set[uuid.UUID] = set()
    for index, profile_id, _ in plan.landings:
        record = carrying.get(index)
        if record is not None and record.consent:
            if await consent.record(repo, profile_id, record.consent, record.source, "bulk"):
                if not plan.targets[profile_id].is_new:
                    changed.add(profile_id)
    return changed
