"""Read replicas: which replica may answer a read, so that no read misses a write it follows.

A write records the position of its commit in the write-ahead log (``commit_lsn``, read after
the commit) and sends it with its invalidation to every process. Each process keeps the newest
such position per identifier digest (``WriteMarks``, bounded) and a probe of every replica's
replay position (``ReplicaProbe``, in the background, never per request). A read for some
digests may go to a replica only when that replica has replayed past every mark of them, and is
not too far behind; else the primary answers. A process that may have missed an invalidation
(just started, or deaf to the bus for a while) trusts no replica until the probe has read the
primary's position after that moment: every write it may have missed committed before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger(__name__)

# Above every real position: "ask the primary".
UNKNOWN = 1 << 64
# What one mark costs: the ordered dict's slot and links, the 16-byte digest, the int.
MARK_BYTES = 200

PRIMARY_POSITION = (
    "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint,"
    " (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
)
REPLAY_POSITION = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, pg_is_in_recovery()"


async def commit_lsn(session: AsyncSession) -> int | None:
    """Where the WAL ends now, read after a commit: at or past the commit's own record.

    (In the write's own transaction, ``pg_current_wal_lsn()`` is read before the commit record
    is written, so a replica that replayed up to it may not have the commit yet.) None when it
    cannot be read: the readers then ask the primary for the position themselves.
    """
    try:
        result = await session.execute(text(PRIMARY_POSITION))
        return int(result.scalar_one())
    except Exception as exc:
        log.warning("replicas.commit_lsn_failed", error=type(exc).__name__)
        return None


class WriteMarks:
    """The newest commit position of the writes to each digest, for the last ``max_entries``
    digests written; every older one shares ``floor`` (the largest position evicted), so
    forgetting sends reads to the primary, never to a replica that lacks the write.

    A write heard without a position (``enrich import``, a retried invalidation) and anything a
    process may have missed (``suspend``) count as UNKNOWN until ``settle`` brings the
    primary's position read after them (every change counts with a serial for that).
    """

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.floor = 0
        self._marks: OrderedDict[bytes, int] = OrderedDict()
        self._unsettled: dict[bytes, int] = {}  # digest: serial of its position-less write
        self._serial = 0
        self._floor_wait: int | None = 0  # nothing is known before the first settle

    def __len__(self) -> int:
        return len(self._marks)

    def note(self, digests: Iterable[bytes], lsn: int | None) -> None:
        self._serial += 1
        for digest in digests:
            previous = self._marks.pop(digest, 0)
            self._marks[digest] = max(previous, lsn or 0)
            if lsn is None:
                self._unsettled[digest] = self._serial
        while len(self._marks) > self.max_entries:
            digest, position = self._marks.popitem(last=False)
            self.floor = max(self.floor, position)
            if self._unsettled.pop(digest, None) is not None:
                self._floor_wait = self._serial

    def required(self, digests: Iterable[bytes]) -> int:
        """The position a replica must have replayed to answer for ``digests``."""
        if self._floor_wait is not None:
            return UNKNOWN
        need = self.floor
        for digest in digests:
            if digest in self._unsettled:
                return UNKNOWN
            position = self._marks.get(digest, 0)
            if position > need:
                need = position
        return need

    def suspend(self) -> None:
        """Invalidations may have been missed: no replica until the next ``settle``."""
        self._serial += 1
        self._floor_wait = self._serial

    def snapshot(self) -> int:
        """Taken before the primary's position is read (``settle`` covers what came before)."""
        return self._serial

    def settle(self, snapshot: int, primary_lsn: int) -> None:
        """The primary's position, read after ``snapshot``: a bound for what was unknown then."""
        if self._floor_wait is not None and self._floor_wait <= snapshot:
            self.floor = max(self.floor, primary_lsn)
            self._floor_wait = None
        settled = [d for d, serial in self._unsettled.items() if serial <= snapshot]
        for digest in settled:
            del self._unsettled[digest]
            if digest in self._marks:
                self._marks[digest] = max(self._marks[digest], primary_lsn)


@dataclass
class Replica:
    """One replica as the probe last saw it."""

    index: int
    url: str
    name: str  # host:port/database, for logs (never the password)
    replayed: int = -1
    usable: bool = False
    checked_at: float = 0.0  # time.monotonic() of the last answer
    connection: asyncpg.Connection | None = field(default=None, repr=False)


class ReplicaProbe:
    """Reads the primary's position and each replica's replay position every ``interval``;
    ``pick`` chooses a replica that may answer a read needing ``required``."""

    def __init__(
        self,
        primary_url: str,
        replica_urls: list[str],
        marks: WriteMarks,
        gate: Callable[[], bool],
        *,
        interval: float,
        max_lag: float,
        timeout: float,
        pgbouncer: bool = False,
    ) -> None:
        self.primary = Replica(-1, _plain(primary_url), _name(primary_url))
        self.primary_position: int | None = None  # flushed WAL, as last read (for the metrics)
        self.replicas = [Replica(i, _plain(u), _name(u)) for i, u in enumerate(replica_urls)]
        self.marks = marks
        self.gate = gate
        self.interval = interval
        self.max_lag = max_lag
        self.timeout = timeout
        self.pgbouncer = pgbouncer
        # (monotonic time, the primary's flushed position): how far behind a replica is.
        self._samples: deque[tuple[float, int]] = deque(maxlen=int(max_lag / interval) + 4)
        self._turn = itertools.count()
        self._task: asyncio.Task[None] | None = None

    def pick(self, required: int) -> Replica | None:
        """A usable replica that has replayed ``required``, in turn; None: the primary."""
        if required >= UNKNOWN:
            return None
        fresh_after = time.monotonic() - 3 * self.interval - self.timeout
        ready = [
            r
            for r in self.replicas
            if r.usable and r.replayed >= required and r.checked_at >= fresh_after
        ]
        if not ready:
            return None
        return ready[next(self._turn) % len(ready)]

    def failed(self, replica: Replica) -> None:
        """A read on ``replica`` failed: skip it until the probe finds it well again."""
        replica.usable = False

    async def probe(self) -> None:
        """One round: the primary's position (settling the marks), then each replica's."""
        snapshot = self.marks.snapshot() if self.gate() else None
        row = await self._ask(self.primary, PRIMARY_POSITION)
        now = time.monotonic()
        if row is not None:
            self.primary_position = int(row[1])
            self._samples.append((now, self.primary_position))
            if snapshot is not None:
                self.marks.settle(snapshot, int(row[0]))
        for replica in self.replicas:
            row = await self._ask(replica, REPLAY_POSITION)
            if row is None or row[0] is None or not row[1]:
                replica.usable = False  # down, or no longer a replica (promoted)
                continue
            replica.replayed = int(row[0])
            replica.checked_at = time.monotonic()
            usable = self._caught_up(replica.replayed, now)
            if usable != replica.usable:
                log.info("replicas.usable" if usable else "replicas.behind", replica=replica.name)
            replica.usable = usable

    def _caught_up(self, replayed: int, now: float) -> bool:
        """Whether the replica has everything the primary had ``max_lag`` seconds ago."""
        for at, position in self._samples:
            if at >= now - self.max_lag:
                return replayed >= position
        return False

    async def _ask(self, server: Replica, query: str) -> Any:
        try:
            if server.connection is None or server.connection.is_closed():
                server.connection = await asyncpg.connect(
                    server.url,
                    timeout=self.timeout,
                    statement_cache_size=0,
                    server_settings={"application_name": "enrich-probe"},
                )
            return await server.connection.fetchrow(query, timeout=self.timeout)
        except Exception as exc:
            log.warning("replicas.probe_failed", server=server.name, error=type(exc).__name__)
            await self._drop(server)
            return None

    async def _drop(self, server: Replica) -> None:
        connection, server.connection = server.connection, None
        if connection is not None:
            connection.terminate()

    async def _run(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        await self.probe()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for server in [self.primary, *self.replicas]:
            await self._drop(server)


def _plain(url: str) -> str:
    """asyncpg's spelling of a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _name(url: str) -> str:
    parsed = make_url(url)
    return f"{parsed.host}:{parsed.port or 5432}/{parsed.database}"
