"""The two-level cache in front of enrich, with a deadline and stale answers under faults.

- L1: each process keeps finished answers (bytes) per (identifiers, fields); a hit is a dict
  lookup. It answers only while the process hears invalidations (see ``app/enrich/cache/bus.py``);
  otherwise its entries are kept as stale copies for when the database fails too.
- L2: Redis keeps one entry per identifier key: the profile view it resolves to, with the
  answer for every field already rendered (what most requests ask for, served as it is), or a
  negative entry for an unknown identifier (short TTL). Entries carry a soft expiry; Redis
  drops them at the hard one. TTLs have jitter so a bulk load does not expire all at once.
- A miss goes to PostgreSQL, coalesced: a burst of misses for one key set is one query per
  process. Everything past L1 runs under the request deadline; past it, or when the database
  fails, a stale copy is served (``X-Cache: stale``, ``"stale": true``) or 503 with Retry-After.
- Redis calls have short socket timeouts and sit behind a circuit breaker, so a dead or hung
  Redis costs a request at most one timeout and then nothing until it is probed again.
- A write that cannot reach Redis is still answered, once every other process has had time to
  notice the silence and switch L1 off (see ``app/enrich/cache/bus.py``); its invalidation is
  retried in the background, and L2 entries older than a process's last outage are not
  trusted as fresh.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson
import redis.asyncio as redis
import structlog
from redis.asyncio.connection import parse_url

from app.core.errors import ServiceUnavailableError
from app.core.settings import Settings
from app.enrich.cache.bus import WRITER_WAIT_SECONDS, InvalidationBus
from app.enrich.cache.l1 import Entry, L1Cache
from app.enrich.document import AnswerView, Match, mark_stale, render
from app.enrich.fields import EVERYTHING, Selection
from app.identity.identifiers import Key
from app.platform.breaker import CircuitBreaker, is_outage
from app.platform.kv import RedisCache
from app.platform.redis_pipe import RedisPipe

log = structlog.get_logger(__name__)

L2_VERSION = "v2"
# A write deletes its L2 keys again this long after the first time: a reader that loaded the
# old profile just before the commit may have refilled them in between.
SECOND_DELETE_SECONDS = 1.0
DELETE_BATCH = 1000

Lookup = Callable[[Sequence[Key]], Awaitable[Match | None]]


def l2_key(key: Key) -> str:
    """Where L2 keeps the resolution of one identifier key (versioned with the format)."""
    return f"enrich:{L2_VERSION}:id:{key[0]}:{key[1]}"


class DatabaseUnavailableError(Exception):
    """The database did not answer (down, refused, or timed out)."""


@dataclass(slots=True)
class Resolution:
    """What a key set resolves to, from L2 or the database."""

    key: Key | None  # the key that matched (None: no profile has any of them)
    view: AnswerView | bytes | None  # the matched profile, or its JSON not parsed yet
    deps: tuple[Key, ...]  # the keys tried up to the match: the answer depends on each
    fresh: bool = True
    body: bytes | None = None  # the answer with every field, when already rendered
    read_at: float = 0.0  # when the database said so (time.time())

    def render(self, selection: Selection, max_chars: int) -> bytes:
        if self.body is not None and selection.key is None:
            return self.body
        if self.key is None:
            return render(None, selection, max_chars)
        view = self.view
        if isinstance(view, bytes):
            view = self.view = orjson.loads(view)
        assert isinstance(view, dict)
        body = render((self.key, view), selection, max_chars)
        if selection.key is None:
            self.body = body  # rendered once for both the L2 entry and the caller
        return body


def l2_entry(resolution: Resolution, key: Key, fresh_until: float, max_chars: int) -> bytes:
    """``key``'s L2 value: a header line (soft expiry, read time, the answer cap and the
    answer's length, -1 for a negative entry), then the rendered answer and the view."""
    if key != resolution.key:
        return b"%.3f %.3f 0 -1\n" % (fresh_until, resolution.read_at)
    view = resolution.view if isinstance(resolution.view, bytes) else orjson.dumps(resolution.view)
    body = resolution.render(EVERYTHING, max_chars)
    head = b"%.3f %.3f %d %d\n" % (fresh_until, resolution.read_at, max_chars, len(body))
    return head + body + view


class EnrichCache:
    def __init__(
        self,
        settings: Settings,
        lookup: Lookup,
        l2: RedisCache | None,
        bus: InvalidationBus,
        l1: L1Cache,
        pipe: RedisPipe | None = None,
    ) -> None:
        self.settings = settings
        self.pipe = pipe  # the L2 reads, auto-pipelined (else through l2.client)
        self.lookup = lookup
        self.enabled = settings.cache_enabled
        self.l1 = l1
        self.bus = bus
        self.l2 = l2 if settings.cache_enabled else None
        self.breaker = CircuitBreaker(
            settings.redis_breaker_failures, settings.redis_breaker_reset_seconds
        )
        self.deadline = settings.deadline_ms / 1000
        self.max_chars = settings.answer_max_chars
        self._inflight: dict[tuple[Key, ...], asyncio.Future[Resolution]] = {}
        # Invalidations Redis did not take yet, each with the number of the write that
        # wanted it (a success removes only what it covered).
        self._pending: dict[Key, int] = {}
        self._pending_serial = 0
        self._tasks: set[asyncio.Future[None]] = set()
        self._retrying: asyncio.Future[None] | None = None

    # -- reads ---------------------------------------------------------------------------

    def l1_hit(self, keys: tuple[Key, ...], selection: Selection) -> Entry | None:
        """A fresh L1 entry, or None (the hot path: no await, no allocation on a hit)."""
        if not self.bus.listening:
            return None
        return self.l1.fresh((keys, selection.key))

    async def answer(self, keys: Sequence[Key], selection: Selection) -> tuple[bytes, str]:
        """The answer bytes and where they came from: "hit", "miss" or "stale"."""
        key_tuple = tuple(keys)
        l1_key = (key_tuple, selection.key)
        use_l1 = self.bus.listening
        # An entry this process cannot trust as fresh (past its TTL, or kept from before Redis
        # went silent) is still the stale copy to serve if the database does not answer.
        stale_entry: Entry | None = self.l1.get(l1_key)
        if use_l1 and stale_entry is not None and stale_entry.fresh_until >= time.monotonic():
            return stale_entry.body, "hit"
        generation = self.l1.generation
        found_in_l2: list[Resolution] = []
        try:
            resolution, level = await self._resolve(key_tuple, found_in_l2)
        except (TimeoutError, DatabaseUnavailableError) as exc:
            log.warning("enrich.degraded", reason=type(exc).__name__)
            if found_in_l2:
                body = found_in_l2[0].render(selection, self.max_chars)
                return mark_stale(body), "stale"
            if stale_entry is not None:
                return mark_stale(stale_entry.body), "stale"
            raise ServiceUnavailableError(
                "profile data is unavailable right now; retry shortly", retry_after=1
            ) from exc
        body = resolution.render(selection, self.max_chars)
        if use_l1 and resolution.fresh:
            self.l1.put(l1_key, body, resolution.deps, generation)
        if not resolution.fresh:
            return mark_stale(body), "stale"
        return body, level

    async def _resolve(
        self, keys: tuple[Key, ...], found_in_l2: list[Resolution]
    ) -> tuple[Resolution, str]:
        """Through L2, then the database, within the deadline.

        The L2 read needs no timer of its own: every Redis call is bounded by the Redis
        timeout, which is never longer than the deadline. The rest of the deadline is left
        for the database.
        """
        if not keys:
            return Resolution(None, None, ()), "hit"
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.deadline
        cached, reachable = await self._from_l2(keys)
        if cached is not None:
            if cached.fresh:
                return cached, "hit"
            found_in_l2.append(cached)  # past its soft expiry: the fallback if the DB fails
        # Redis just failed this request: do not spend a second timeout on filling it.
        async with asyncio.timeout_at(give_up):
            return await self._from_db(keys, fill=reachable), "miss"

    async def _from_l2(self, keys: tuple[Key, ...]) -> tuple[Resolution | None, bool]:
        """Walk the keys in order through L2 (None when one of them is not there), and
        whether Redis answered."""
        if self.l2 is None or not self.breaker.allow():
            return None, True
        if self._pending and not self._pending.keys().isdisjoint(keys):
            return None, True  # written while Redis was away: L2 may still hold the old entry
        names = [self.l2.prefix + l2_key(k) for k in keys]
        values: list[bytes | None]
        try:
            if self.pipe is not None:
                values = await self.pipe.mget(names)
            else:
                async with asyncio.timeout(self.deadline):
                    values = await self.l2.client.mget(names)  # type: ignore[assignment]
        except Exception as exc:
            self._redis_failed(exc)
            return None, False
        self.breaker.success()
        now = time.time()
        trusted_from = self.bus.trusted_from
        fresh = True
        for index, raw in enumerate(values):
            if raw is None:
                return None, True
            head, _, rest = raw.partition(b"\n")
            fresh_until, read_at, max_chars, size = head.split(b" ")
            fresh = fresh and float(fresh_until) >= now and float(read_at) >= trusted_from
            length = int(size)
            if length >= 0:
                # An answer rendered under another cap (a changed setting) is rendered again.
                body = rest[:length] if int(max_chars) == self.max_chars else None
                return Resolution(keys[index], rest[length:], keys[: index + 1], fresh, body), True
        return Resolution(None, None, keys, fresh), True

    async def _from_db(self, keys: tuple[Key, ...], *, fill: bool = True) -> Resolution:
        """Query the database once per process for concurrent misses of the same keys."""
        waiting = self._inflight.get(keys)
        if waiting is not None:
            try:
                return await asyncio.shield(waiting)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if waiting.cancelled() and task is not None and not task.cancelling():
                    raise DatabaseUnavailableError("the shared lookup was abandoned") from None
                raise
        future: asyncio.Future[Resolution] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume)
        self._inflight[keys] = future
        try:
            resolution = await self._query(keys, fill)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(resolution)
            return resolution
        finally:
            self._inflight.pop(keys, None)

    async def _query(self, keys: tuple[Key, ...], fill: bool) -> Resolution:
        read_at = time.time()
        try:
            match = await self.lookup(keys)
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
        if fill:
            await self._fill_l2(resolution)
        return resolution

    async def _fill_l2(self, resolution: Resolution) -> None:
        """Store what the database said: the match, and a negative entry per key before it.

        Only while the breaker is closed: the probe of a Redis that failed is a read, which
        gives up on its own timeout, never a fill, which the answer (and every request
        coalesced on it) would wait for.
        """
        if self.l2 is None or self.breaker.is_open:
            return
        if self._pending and not self._pending.keys().isdisjoint(resolution.deps):
            return  # an invalidation Redis has not taken yet would not remove it
        now = time.time()
        try:
            async with self.l2.client.pipeline(transaction=False) as pipe:
                for key in resolution.deps:
                    fresh_for = self.settings.cache_negative_ttl_seconds
                    hard_extra = 0.0
                    if key == resolution.key:
                        fresh_for = self.settings.cache_l2_ttl_seconds
                        hard_extra = self.settings.cache_stale_seconds
                    fresh_for = self._jitter(fresh_for)
                    value = l2_entry(resolution, key, now + fresh_for, self.max_chars)
                    hard_ms = int((fresh_for + hard_extra) * 1000)
                    pipe.set(self.l2.prefix + l2_key(key), value, px=hard_ms)
                await pipe.execute()
            self.breaker.success()
        except Exception as exc:
            self._redis_failed(exc)

    def _jitter(self, seconds: float) -> float:
        spread = self.settings.cache_ttl_jitter
        return seconds * (1 + random.uniform(-spread, spread))

    # -- writes --------------------------------------------------------------------------

    async def invalidate(self, keys: Iterable[Key]) -> None:
        """Drop every cached answer that depends on ``keys``, here and in every process.

        Called after a write commits and before it is answered. When Redis cannot take it,
        this retries for ``WRITER_WAIT_SECONDS``: by then any process that missed the message
        has noticed that Redis is silent and serves nothing from L1. Then the write is answered
        anyway and the invalidation retried in the background.
        """
        key_list = sorted(set(keys))
        if not key_list:
            return
        self.l1.invalidate(key_list)
        if self.l2 is None:
            return
        if not await self._invalidate_remote(key_list) and not await self._insist(key_list):
            return
        self._spawn(self._second_delete(key_list))

    async def _insist(self, key_list: list[Key]) -> bool:
        """Retry for a while; past it, leave the invalidation to the background."""
        wanted = self._mark_pending(key_list)  # L2 is not read for them here meanwhile
        give_up = time.monotonic() + WRITER_WAIT_SECONDS
        delay = 0.05
        try:
            while True:
                await asyncio.sleep(min(delay, max(0.0, give_up - time.monotonic())))
                if await self._invalidate_remote(key_list):
                    self._unmark_pending(wanted)
                    return True
                if time.monotonic() >= give_up:
                    return False
                delay *= 2
        finally:
            if self._pending:
                self._retry_later()

    def _mark_pending(self, key_list: Iterable[Key]) -> dict[Key, int]:
        self._pending_serial += 1
        wanted = dict.fromkeys(key_list, self._pending_serial)
        self._pending.update(wanted)
        return wanted

    def _unmark_pending(self, done: dict[Key, int]) -> None:
        for key, serial in done.items():
            if self._pending.get(key) == serial:  # else a later write still needs it
                del self._pending[key]

    def _retry_later(self) -> None:
        if self._retrying is None or self._retrying.done():
            self._retrying = asyncio.ensure_future(self._retry_pending())

    async def _invalidate_remote(self, key_list: list[Key]) -> bool:
        assert self.l2 is not None
        try:
            for start in range(0, len(key_list), DELETE_BATCH):
                batch = key_list[start : start + DELETE_BATCH]
                await self.l2.delete(*(l2_key(k) for k in batch))
                await self.bus.publish(batch, raise_errors=True)
        except Exception as exc:
            self._redis_failed(exc)
            return False
        self.breaker.success()
        return True

    async def _second_delete(self, key_list: list[Key]) -> None:
        await asyncio.sleep(SECOND_DELETE_SECONDS)
        assert self.l2 is not None
        try:
            for start in range(0, len(key_list), DELETE_BATCH):
                await self.l2.delete(*(l2_key(k) for k in key_list[start : start + DELETE_BATCH]))
        except Exception as exc:
            self._redis_failed(exc)
            self._mark_pending(key_list)
            self._retry_later()

    async def _retry_pending(self) -> None:
        delay = 0.2
        while self._pending:
            await asyncio.sleep(delay)
            wanted = dict(self._pending)
            if await self._invalidate_remote(sorted(wanted)):
                self._unmark_pending(wanted)
            else:
                delay = min(delay * 2, 2.0)

    # -- plumbing ------------------------------------------------------------------------

    def _redis_failed(self, exc: BaseException) -> None:
        # Only an outage opens the circuit: one request's bad value must not make every
        # other request skip Redis.
        if is_outage(exc):
            self.breaker.failure()
        log.warning("cache.redis_failed", error=type(exc).__name__, open=self.breaker.is_open)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self.pipe is not None:
            await self.pipe.close()
        if self._retrying is not None:
            self._tasks.add(self._retrying)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _consume(future: asyncio.Future[Resolution]) -> None:
    # Mark the exception retrieved: a lookup nobody else waited for must not warn at exit.
    if not future.cancelled():
        future.exception()


class RemoteInvalidator:
    """Invalidation for writers outside the server (``enrich import``): L2 and every L1."""

    def __init__(self, settings: Settings) -> None:
        self.cache = RedisCache.from_settings(settings)
        bus_client = redis.Redis.from_url(
            settings.redis_dsn or "", socket_connect_timeout=settings.redis_connect_timeout
        )
        self.bus = InvalidationBus(
            L1Cache(0, 1.0, 0.0),
            bus_client,
            invalidation_channel(settings),
            single_process=False,
            ack_timeout=settings.cache_invalidation_ack_ms / 1000,
        )

    async def invalidate(self, keys: Iterable[Key]) -> None:
        key_list = sorted(set(keys))
        for start in range(0, len(key_list), DELETE_BATCH):
            batch = key_list[start : start + DELETE_BATCH]
            await self.cache.delete(*(l2_key(k) for k in batch))
            await self.bus.publish(batch, raise_errors=True)

    async def close(self) -> None:
        await self.cache.close()
        if self.bus.client is not None:
            await self.bus.client.aclose()


def invalidation_channel(settings: Settings) -> str:
    """The deployment's channel: pub/sub ignores database numbers, so two deployments with
    one prefix in two databases of one Redis would share a channel named after the prefix."""
    dsn = settings.redis_dsn
    database = parse_url(dsn).get("db", 0) if dsn else 0
    return f"{settings.redis_prefix}enrich:invalidate:db{database}"
