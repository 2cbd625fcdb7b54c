"""Sessions for pure reads (a profile GET): on a replica that has every write they depend on,
else on the primary. The choice is ``app.core.replicas``'s; this only opens the session and
falls back to the primary when the replica fails the read."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import TypeVar

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.replicas import Replica, ReplicaProbe, WriteMarks

log = structlog.get_logger(__name__)

T = TypeVar("T")


class ReplicaRouter:
    """Which server a read may use: a replica (``pick``) only while ``gate`` says this process
    hears every write's invalidation, and only one that replayed the marks of ``digests``."""

    def __init__(self, marks: WriteMarks, probe: ReplicaProbe, gate: Callable[[], bool]) -> None:
        self.marks = marks
        self.probe = probe
        self.gate = gate
        # Reads sent to a replica, to the primary (none could answer), and sent again to the
        # primary after a replica failed; the metrics take and reset them (``ReplicaMetrics``).
        self.reads = {"replica": 0, "primary": 0, "fallback": 0}

    def pick(self, digests: Iterable[bytes]) -> Replica | None:
        replica = self.probe.pick(self.marks.required(digests)) if self.gate() else None
        self.reads["primary" if replica is None else "replica"] += 1
        return replica

    def failed(self, replica: Replica, exc: BaseException) -> None:
        log.warning("replicas.read_failed", replica=replica.name, error=type(exc).__name__)
        self.reads["fallback"] += 1
        self.probe.failed(replica)


class ReadSessions:
    """``run(keys, work)``: ``work`` on a session of a replica that may answer for ``keys``, or
    of the primary. Without replicas (``router`` None) always the primary."""

    def __init__(
        self,
        primary: async_sessionmaker[AsyncSession],
        router: ReplicaRouter | None = None,
        replicas: list[async_sessionmaker[AsyncSession]] | None = None,
        digest: Callable[[Hashable], bytes] | None = None,
        timeout: float = 1.0,
    ) -> None:
        self.primary = primary
        self.router = router
        self.replicas = replicas or []
        self.digest = digest
        # A replica read that has not ended by then failed: a hung replica (its connections
        # open, nothing answering; its own statement timeout cannot fire) would hold the read
        # for ever, and the primary would never be asked.
        self.timeout = timeout

    async def run(
        self, keys: Iterable[Hashable], work: Callable[[AsyncSession], Awaitable[T]]
    ) -> T:
        if self.router is not None and self.digest is not None:
            replica = self.router.pick([self.digest(key) for key in keys])
            if replica is not None:
                try:
                    async with asyncio.timeout(self.timeout):
                        async with self.replicas[replica.index]() as session:
                            return await work(session)
                except (DBAPIError, OSError, TimeoutError) as exc:
                    # Down, or a query cancelled by a recovery conflict: the primary answers.
                    self.router.failed(replica, exc)
        async with self.primary() as session:
            return await work(session)
