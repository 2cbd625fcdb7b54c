"""The bulk engine's PostgreSQL statements: arrays in, COPY for the new rows.

Every statement takes the whole batch: identifiers are resolved with one join against
``unnest`` of two arrays, new profiles and identifiers arrive by COPY (binary, straight into
the tables), and changed profiles are rewritten by one ``UPDATE ... FROM unnest(...)`` whose
WHERE clause skips rows that would not change, so an unchanged profile keeps its version.
The statements run on the session's own connection, inside the caller's transaction.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models.base import utcnow
from app.identity.identifiers import Key
from app.profiles.bulk.plan import Plan, Target
from app.profiles.documents import PreparedProfile

# Races with concurrent writers; the engine retries the batch from its savepoint.
RETRYABLE = (
    asyncpg.UniqueViolationError,
    asyncpg.ForeignKeyViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)

# What the server refuses in a record's data (22 data exception: an escape JSON cannot hold,
# a value out of range; 23 a check or not-null constraint; 54 a value past a limit, such as an
# index row) or the client cannot encode; every statement runs inside the batch's savepoint.
# Tested after RETRYABLE, whose unique and foreign-key violations are class 23 too.
REFUSED: tuple[type[Exception], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
    UnicodeEncodeError,
    orjson.JSONEncodeError,
)

PROFILE_COLUMNS = (
    "id",
    "traits",
    "segments",
    "metrics",
    "recommendations",
    "source",
    "order_count",
    "lifetime_value",
    "last_order_at",
    "last_event_at",
    "created_at",
    "updated_at",
    "version",
)

IDENTIFIER_COLUMNS = ("type", "value", "profile_id")
EVENT_COLUMNS = ("order_count", "lifetime_value", "last_order_at", "last_event_at")

OWNERS = """
SELECT i.type, i.value, i.profile_id
FROM identifiers AS i
JOIN unnest($1::text[], $2::text[]) AS k(type, value) ON i.type = k.type AND i.value = k.value
"""

LOCK = "SELECT id FROM profiles WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"

KEYS_OF = "SELECT type, value FROM identifiers WHERE profile_id = ANY($1::uuid[])"

# An event metric the record does not name keeps its stored value ("*_set" is false).
UPDATE = """
UPDATE profiles AS p SET
    traits = u.traits,
    segments = u.segments,
    metrics = u.metrics,
    recommendations = u.recommendations,
    source = u.source,
    order_count = CASE WHEN u.oc_set THEN u.order_count ELSE p.order_count END,
    lifetime_value = CASE WHEN u.ltv_set THEN u.lifetime_value ELSE p.lifetime_value END,
    last_order_at = CASE WHEN u.loa_set THEN u.last_order_at ELSE p.last_order_at END,
    last_event_at = CASE WHEN u.lea_set THEN u.last_event_at ELSE p.last_event_at END,
    updated_at = $16,
    version = p.version + 1
FROM (
    SELECT id, traits::jsonb AS traits, segments::jsonb AS segments, metrics::jsonb AS metrics,
        recommendations::jsonb AS recommendations, source, oc_set, order_count, ltv_set,
        lifetime_value, loa_set, last_order_at, lea_set, last_event_at, gains_keys
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::bool[], $8::int[], $9::bool[], $10::numeric[], $11::bool[], $12::timestamptz[],
        $13::bool[], $14::timestamptz[], $15::bool[])
        AS t(id, traits, segments, metrics, recommendations, source, oc_set, order_count,
            ltv_set, lifetime_value, loa_set, last_order_at, lea_set, last_event_at,
            gains_keys)
) AS u
WHERE p.id = u.id AND (
    u.gains_keys
    OR p.traits IS DISTINCT FROM u.traits
    OR p.segments IS DISTINCT FROM u.segments
    OR p.metrics IS DISTINCT FROM u.metrics
    OR p.recommendations IS DISTINCT FROM u.recommendations
    OR p.source IS DISTINCT FROM u.source
    OR (u.oc_set AND p.order_count IS DISTINCT FROM u.order_count)
    OR (u.ltv_set AND p.lifetime_value IS DISTINCT FROM u.lifetime_value)
    OR (u.loa_set AND p.last_order_at IS DISTINCT FROM u.last_order_at)
    OR (u.lea_set AND p.last_event_at IS DISTINCT FROM u.last_event_at)
)
RETURNING p.id
"""


ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
NULL = "\\N"

Texts = tuple[str, str, str, str]  # traits, segments, metrics, recommendations as JSON


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def texts_of(content: PreparedProfile) -> Texts:
    return (
        dumps(content.traits),
        dumps(content.segments),
        dumps(content.metrics),
        dumps(content.recommendations),
    )


def plain(value: str) -> bool:
    """Whether ``value`` needs no escaping in COPY's text format (almost always).

    Four substring searches in C; a set's ``isdisjoint(value)`` hashes every character and
    was a tenth of the reader process's time on 64-digit email hashes."""
    return not ("\\" in value or "\t" in value or "\n" in value or "\r" in value)


def field(value: str) -> str:
    """A value in COPY's text format (backslash, tab, newline and return escaped)."""
    return value if plain(value) else value.translate(ESCAPES)


def json_field(text: str) -> str:
    # orjson writes control characters as JSON escapes, so only backslashes need doubling.
    return text.replace("\\", "\\\\") if "\\" in text else text


def optional(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


class EncodedProfile(PreparedProfile):
    """A prepared profile whose content travels as COPY text; only the PostgreSQL store takes it.

    The reader process picks the id the profile gets if the record creates one and writes the
    COPY lines with it, so the importer usually passes them on untouched: ``row`` is the
    profile's line up to ``last_event_at`` (no tab or newline after it), ``key_lines`` one
    identifier line per key. ``traits``, ``segments``, ``metrics`` and ``recommendations``
    stay empty; ``texts`` (the JSON) and ``columns`` are read back from ``row`` only when a
    record needs more than its own lines (an update, or two records on one profile).
    """

    def __init__(
        self,
        keys: list[Key],
        source: str | None,
        named: tuple[str, ...],
        candidate: uuid.UUID,
        row: str,
        key_lines: tuple[str, ...],
    ) -> None:
        # PreparedProfile's fields, set directly: this runs once per record in the hot loop.
        self.keys = keys
        self.traits = {}
        self.segments = []
        self.metrics = {}
        self.recommendations = []
        self.source = source
        self.named = named
        self.candidate = candidate
        self.row = row
        self.key_lines = key_lines
        self._columns: dict[str, Any] | None = None

    @property
    def texts(self) -> Texts:
        parts = self.row.split("\t", 5)[1:5]
        traits, segments, metrics, recommendations = [p.replace("\\\\", "\\") for p in parts]
        return traits, segments, metrics, recommendations

    @property
    def columns(self) -> dict[str, Any]:
        if self._columns is None:
            cells = dict(zip(EVENT_COLUMNS, self.row.rsplit("\t", 4)[1:], strict=True))
            self._columns = {name: column_from_copy(name, cells[name]) for name in self.named}
        return self._columns

    @columns.setter
    def columns(self, value: dict[str, Any]) -> None:
        self._columns = value


def column_from_copy(name: str, cell: str) -> Any:
    """An event metric back from its COPY text (as ``column_value`` made it)."""
    if cell == NULL:
        return None
    if name == "order_count":
        return int(cell)
    if name == "lifetime_value":
        return Decimal(cell)
    return datetime.fromisoformat(cell)


class PgStore:
    refused = REFUSED

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.pg = connection
        self.texts: dict[int, Texts] = {}

    @classmethod
    async def open(cls, session: AsyncSession) -> PgStore:
        """Use the session's connection (and so its transaction) directly."""
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, asyncpg.Connection)
        return cls(driver)

    def check_transaction(self) -> None:
        if not self.pg.is_in_transaction():
            raise RuntimeError("the bulk engine must run inside a transaction")

    def serialize(self, records: Sequence[tuple[int, PreparedProfile]]) -> None:
        """Turn the records' content into JSON text (run while a lookup is in flight)."""
        # Encoded records carry their text; it is read back only for the few that need it.
        self.texts = {
            id(record): texts_of(record)
            for _, record in records
            if not isinstance(record, EncodedProfile)
        }

    def _texts(self, content: PreparedProfile) -> Texts:
        if isinstance(content, EncodedProfile):
            return content.texts
        found = self.texts.get(id(content))
        return found if found is not None else texts_of(content)

    async def owners(self, keys: Sequence[Key]) -> dict[Key, uuid.UUID]:
        rows = await self.pg.fetch(OWNERS, [k[0] for k in keys], [k[1] for k in keys])
        return {(t, v): pid for t, v, pid in rows}

    async def lock(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        return {row[0] for row in await self.pg.fetch(LOCK, list(ids))}

    async def keys_of(self, ids: Sequence[uuid.UUID]) -> list[Key]:
        return [(t, v) for t, v in await self.pg.fetch(KEYS_OF, list(ids))]

    async def write(self, plan: Plan) -> set[uuid.UUID]:
        """COPY new profiles, then new identifiers, then one UPDATE for the existing profiles.

        Each statement's input is built while the previous statement runs on the server.
        """
        now = utcnow().isoformat()
        created = plan.created
        pending = None
        tail = f"\t{now}\t{now}\t1\n"
        if created:
            rows = "".join(
                [
                    c.row + tail
                    if type(c := t.content) is EncodedProfile and c.candidate == t.profile_id
                    else self._profile_line(t, now)
                    for t in created
                ]
            ).encode()
            # A memoryview: asyncpg would take bytes for a file name.
            pending = asyncio.ensure_future(
                self.pg.copy_to_table("profiles", source=memoryview(rows), columns=PROFILE_COLUMNS)
            )
            await asyncio.sleep(0)  # let the COPY start before building the next input
        # Sorted keys touch the index in order and keep concurrent loads from deadlocking.
        lines: list[str] = []
        for target in plan.targets.values():
            new_keys = target.new_keys
            if not new_keys:
                continue
            content = target.content
            if (
                type(content) is EncodedProfile
                and content.candidate == target.profile_id
                and len(new_keys) == len(content.key_lines)
            ):
                lines.extend(content.key_lines)  # every key of the record that created it
            else:
                owner = f"\t{target.profile_id}\n"
                lines.extend(f"{field(t)}\t{field(v)}{owner}" for t, v in new_keys)
        lines.sort()
        if pending is not None:
            await pending
        existing = plan.existing
        pending = None
        if lines:
            pending = asyncio.ensure_future(
                self.pg.copy_to_table(
                    "identifiers",
                    source=memoryview("".join(lines).encode()),
                    columns=IDENTIFIER_COLUMNS,
                )
            )
            await asyncio.sleep(0)
        arrays = self._update_arrays(existing) if existing else None
        if pending is not None:
            await pending
        if arrays is None:
            return set()
        rows_changed = await self.pg.fetch(UPDATE, *arrays, utcnow())
        return {row[0] for row in rows_changed}

    def _profile_line(self, target: Target, now: str) -> str:
        traits, segments, metrics, recommendations = self._texts(target.content)
        source = target.content.source
        columns = target.columns
        return (
            f"{target.profile_id}\t{json_field(traits)}\t{json_field(segments)}\t"
            f"{json_field(metrics)}\t{json_field(recommendations)}\t"
            f"{NULL if source is None else field(source)}\t"
            f"{optional(columns.get('order_count'))}\t{optional(columns.get('lifetime_value'))}\t"
            f"{optional(columns.get('last_order_at'))}\t{optional(columns.get('last_event_at'))}\t"
            f"{now}\t{now}\t1\n"
        )

    def _update_arrays(self, targets: Sequence[Target]) -> list[list[Any]]:
        arrays: list[list[Any]] = [[] for _ in range(15)]
        for target in targets:
            content = target.content
            columns = target.columns
            values = (
                target.profile_id,
                *self._texts(content),
                content.source,
                "order_count" in columns,
                columns.get("order_count"),
                "lifetime_value" in columns,
                columns.get("lifetime_value"),
                "last_order_at" in columns,
                columns.get("last_order_at"),
                "last_event_at" in columns,
                columns.get("last_event_at"),
                bool(target.new_keys),
            )
            for array, value in zip(arrays, values, strict=True):
                array.append(value)
        return arrays
