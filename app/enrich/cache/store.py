"""The two-level cache in front of enrich, with a deadline and stale answers under faults.

- L1: each process keeps finished answers (bytes) per (identifiers, fields); a hit is a dict
  lookup. It answers only while the process hears invalidations (see ``app/enrich/cache/bus.py``);
  otherwise its entries are kept as stale copies for when the database fails too.
- L2: Redis keeps one entry per identifier key (see ``app/enrich/cache/l2.py``).
- A miss goes to PostgreSQL, coalesced: a burst of misses for one key set is one query per
  process. Everything past L1 runs under the request deadline; past it, or when the database
  fails, a stale copy is served (``X-Cache: stale``, ``"stale": true``) or 503 with Retry-After.
- A write that cannot reach Redis is still answered, once every other process has had time to
  notice the silence and switch L1 off (see ``app/enrich/cache/bus.py``); its invalidation is
  retried in the background, and L2 entries older than a process's last outage are not
  trusted as fresh.

Where an answer came from is its level: "hit" (L1 or L2), "miss" (the database) or "stale"
(a copy past its freshness, served because the database did not answer in time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal

import structlog

from app.core.errors import ServiceUnavailableError
from app.core.replica_reads import ReplicaRouter
from app.core.settings import Settings
from app.enrich.cache.bus import HEARD_SECONDS, WRITER_WAIT_SECONDS, InvalidationBus
from app.enrich.cache.coalesce import AbandonedError, Coalescer
from app.enrich.cache.l1 import Entry, L1Cache, dep_digest
from app.enrich.cache.l2 import L2, Resolution
from app.enrich.cache.remote import drop_everywhere
from app.enrich.document import Match, mark_stale
from app.enrich.fields import Selection
from app.identity.identifiers import Key
from app.platform.kv import RedisCache
from app.platform.redis_pipe import RedisPipe

log = structlog.get_logger(__name__)

Level = Literal["hit", "miss", "stale"]
LEVELS: tuple[Level, ...] = ("hit", "miss", "stale")
# A write deletes its L2 keys again this long after the first time: a reader that loaded the
# old profile just before the commit may have refilled them in between.
SECOND_DELETE_SECONDS = 1.0

Lookup = Callable[[Sequence[Key]], Awaitable[Match | None]]


@dataclass
class Replicas:
    """The read replicas: which may answer (``router``) and a lookup on each (by index)."""

    router: ReplicaRouter
    lookups: Sequence[Lookup]


class DatabaseUnavailableError(Exception):
    """The database did not answer (down, refused, or timed out)."""


class EnrichCache:
    """Answers by identifier keys and fields: from L1, L2 or the database (``lookup``); and
    the invalidation of every level after a write."""

    def __init__(
        self,
        settings: Settings,
        lookup: Lookup,
        redis: RedisCache | None,
        bus: InvalidationBus,
        l1: L1Cache,
        pipe: RedisPipe | None = None,
        replicas: Replicas | None = None,
    ) -> None:
        self.lookup = lookup
        self.replicas = replicas
        self.l1 = l1
        self.bus = bus
        # L2 (``pipe``: its reads, auto-pipelined; else through ``redis``'s own client).
        self.l2: L2 | None = None
        if redis is not None and settings.cache_enabled:
            self.l2 = L2(redis, settings, pipe)
        self.deadline = settings.deadline_ms / 1000
        self.max_chars = settings.answer_max_chars
        self._lookups: Coalescer[tuple[Key, ...], Resolution] = Coalescer()
        self._tasks: set[asyncio.Future[None]] = set()
        self._retrying: asyncio.Future[None] | None = None
        self._trusted_from = bus.trusted_from

    def hears_every_write(self) -> bool:
        """Whether this process has heard every write's invalidation since the replicas' marks
        last learned the primary's position: only then may a replica answer a read here. A
        process that went deaf (and may have missed some) waits for the next probe."""
        bus = self.bus
        if bus.trusted_from != self._trusted_from and self.replicas is not None:
            self._trusted_from = bus.trusted_from
            self.replicas.router.marks.suspend()
        return bus.listening

    # -- reads ---------------------------------------------------------------------------

    def l1_hit(self, keys: tuple[Key, ...], selection: Selection) -> Entry | None:
        """A fresh L1 entry, or None (the hot path: no await, no allocation on a hit)."""
        bus = self.bus  # (bus.hears_now(), inlined: this runs on every L1 hit)
        if not bus.listening or time.monotonic() - bus.heard_at >= HEARD_SECONDS:
            return None
        return self.l1.fresh((keys, selection.key))

    async def answer(self, keys: Sequence[Key], selection: Selection) -> tuple[bytes, Level]:
        """The answer bytes and their level."""
        key_tuple = tuple(keys)
        l1_key = (key_tuple, selection.key)
        use_l1 = self.bus.hears_now()
        # An entry this process cannot trust as fresh (past its TTL, or kept from before Redis
        # went silent) is still the stale copy to serve if the database does not answer.
        stale_entry = self._l1_entry(l1_key)
        if use_l1 and stale_entry is not None and stale_entry.fresh_until >= time.monotonic():
            return stale_entry.body, "hit"
        generation = self.l1.generation
        found_in_l2: list[Resolution] = []
        try:
            resolution, level = await self._resolve(key_tuple, found_in_l2)
        except (TimeoutError, DatabaseUnavailableError) as exc:
            log.warning("enrich.degraded", reason=type(exc).__name__)
            return self._degraded(selection, found_in_l2, stale_entry, exc)
        body = resolution.render(selection, self.max_chars)
        if use_l1 and resolution.fresh:
            self.l1.put(l1_key, body, resolution.deps, generation)
        if not resolution.fresh:
            return mark_stale(body), "stale"
        return body, level

    def _degraded(
        self,
        selection: Selection,
        found_in_l2: list[Resolution],
        stale_entry: Entry | None,
        exc: Exception,
    ) -> tuple[bytes, Level]:
        """The database did not answer in time: a stale copy, else 503."""
        if found_in_l2:
            body = found_in_l2[0].render(selection, self.max_chars)
            return mark_stale(body), "stale"
        if stale_entry is not None:
            return mark_stale(stale_entry.body), "stale"
        raise ServiceUnavailableError(
            "profile data is unavailable right now; retry shortly", retry_after=1
        ) from exc

    async def _resolve(
        self, keys: tuple[Key, ...], found_in_l2: list[Resolution]
    ) -> tuple[Resolution, Level]:
        """Through L2, then the database, within the deadline.

        The L2 read needs no timer of its own: every Redis call is bounded by the Redis
        timeout, which is never longer than the deadline. The rest of the deadline is left
        for the database.
        """
        if not keys:
            return Resolution(None, None, ()), "hit"
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.deadline
        cached, reachable = None, True
        if self.l2 is not None:
            cached, reachable = await self._l2_read(keys)
        if cached is not None:
            if cached.fresh:
                return cached, "hit"
            found_in_l2.append(cached)  # past its soft expiry: the fallback if the DB fails
        # Redis just failed this request: do not spend a second timeout on filling it.
        async with asyncio.timeout_at(give_up):
            return await self._from_db(keys, fill=reachable), "miss"

    async def _from_db(self, keys: tuple[Key, ...], *, fill: bool) -> Resolution:
        """Query the database once per process for concurrent misses of the same keys."""
        try:
            return await self._lookups.run(keys, partial(self._query, keys, fill))
        except AbandonedError:
            raise DatabaseUnavailableError("the shared lookup was abandoned") from None

    async def _query(self, keys: tuple[Key, ...], fill: bool) -> Resolution:
        read_at = time.time()
        try:
            match, current = await self._lookup(keys)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("enrich.database_failed", error=type(exc).__name__)
            raise DatabaseUnavailableError(str(type(exc).__name__)) from exc
        if match is None:
            resolution = Resolution(None, None, keys, read_at=read_at)
        else:
            index = keys.index(match[0])
            resolution = Resolution(match[0], match[1], keys[: index + 1], read_at=read_at)
        if fill and current and self.l2 is not None:
            await self._l2_fill(resolution)
        return resolution

    # The steps a traced cache (app/enrich/cache/traced.py) wraps in spans.

    def _l1_entry(self, l1_key: tuple[tuple[Key, ...], object]) -> Entry | None:
        """The L1 entry, fresh or not (``answer`` decides)."""
        return self.l1.get(l1_key)

    async def _l2_read(self, keys: tuple[Key, ...]) -> tuple[Resolution | None, bool]:
        assert self.l2 is not None
        return await self.l2.read(keys, self.bus.trusted_from)

    async def _l2_fill(self, resolution: Resolution) -> None:
        assert self.l2 is not None
        await self.l2.fill(resolution)

    async def _lookup(self, keys: tuple[Key, ...]) -> tuple[Match | None, bool]:
        """On a replica that has replayed every write to ``keys``, else on the primary; and
        whether the answer may fill L2: not when a replica answered and a write to ``keys``
        was heard meanwhile (the replica may have read before it)."""
        if self.replicas is not None:
            router = self.replicas.router
            digests = [dep_digest(key) for key in keys]
            replica = router.pick(digests)
            if replica is not None:
                needed = router.marks.required(digests)
                try:
                    # Half the deadline at most: a hung replica leaves the primary the rest.
                    async with asyncio.timeout(self.deadline / 2):
                        match = await self.replicas.lookups[replica.index](keys)
                    return match, router.marks.required(digests) == needed
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    router.failed(replica, exc)
        return await self.lookup(keys), True

    # -- writes --------------------------------------------------------------------------

    async def invalidate(self, keys: Iterable[Key], lsn: int | None = None) -> None:
        """Drop every cached answer that depends on ``keys``, here and in every process, and
        tell every process the write's commit position (``lsn``, for the read replicas).

        Called after a write commits and before it is answered. When Redis cannot take it,
        this retries for ``WRITER_WAIT_SECONDS``: by then any process that missed the message
        has noticed that Redis is silent and serves nothing from L1. Then the write is answered
        anyway and the invalidation retried in the background.
        """
        key_list = sorted(set(keys))
        if not key_list:
            return
        if self.replicas is not None:
            self.replicas.router.marks.note([dep_digest(key) for key in key_list], lsn)
        self.l1.invalidate(key_list)
        if self.l2 is None:
            return
        if not await self._invalidate_remote(key_list, lsn) and not await self._insist(key_list):
            return
        self._spawn(self._second_delete(key_list))

    async def _insist(self, key_list: list[Key]) -> bool:
        """Retry for a while; past it, leave the invalidation to the background."""
        assert self.l2 is not None
        wanted = self.l2.mark_pending(key_list)  # L2 is not read for them here meanwhile
        give_up = time.monotonic() + WRITER_WAIT_SECONDS
        delay = 0.05
        try:
            while True:
                await asyncio.sleep(min(delay, max(0.0, give_up - time.monotonic())))
                if await self._invalidate_remote(key_list):
                    self.l2.unmark_pending(wanted)
                    return True
                if time.monotonic() >= give_up:
                    return False
                delay *= 2
        finally:
            if self.l2.pending:
                self._retry_later()

    def _retry_later(self) -> None:
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.ensure_future(self._retry_pending())

    async def _invalidate_remote(self, key_list: list[Key], lsn: int | None = None) -> bool:
        assert self.l2 is not None
        try:
            await drop_everywhere(self.l2.redis, self.bus, key_list, lsn)
        except Exception as exc:
            self.l2.failed(exc)
            return False
        self.l2.breaker.success()
        return True

    async def _second_delete(self, key_list: list[Key]) -> None:
        await asyncio.sleep(SECOND_DELETE_SECONDS)
        assert self.l2 is not None
        try:
            await self.l2.delete(key_list)
        except Exception as exc:
            self.l2.failed(exc)
            self.l2.mark_pending(key_list)
            self._retry_later()

    async def _retry_pending(self) -> None:
        assert self.l2 is not None
        delay = 0.2
        while self.l2.pending:
            await asyncio.sleep(delay)
            wanted = dict(self.l2.pending)
            if await self._invalidate_remote(sorted(wanted)):
                self.l2.unmark_pending(wanted)
            else:
                delay = min(delay * 2, 2.0)

    # -- plumbing ------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self.l2 is not None:
            await self.l2.close()
        if self._retrying is not None:
            self._tasks.add(self._retrying)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
