"""L2: Redis keeps what each identifier key resolves to, for every process of the deployment.

One entry per identifier key: the view of the profile it resolves to, with the answer for
every field already rendered (what most requests ask for, served as it is), or a negative
entry for an unknown identifier (short TTL). Entries carry a soft expiry; Redis drops them at
the hard one. TTLs have jitter so a bulk load does not expire all at once.

Redis calls have short socket timeouts and sit behind a circuit breaker, so a dead or hung
Redis costs a request at most one timeout and then nothing until it is probed again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
import structlog

from app.core.settings import Settings
from app.enrich.document import AnswerView, render
from app.enrich.fields import EVERYTHING, Selection
from app.identity.identifiers import Key
from app.platform.breaker import CircuitBreaker, is_outage
from app.platform.kv import RedisCache
from app.platform.redis_pipe import RedisPipe

log = structlog.get_logger(__name__)

# v3: the view carries consent statuses (an entry without them would skip the check).
L2_VERSION = "v3"
DELETE_BATCH = 1000


def l2_key(key: Key) -> str:
    """Where L2 keeps the resolution of one identifier key (versioned with the format)."""
    return f"enrich:{L2_VERSION}:id:{key[0]}:{key[1]}"


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


def resolution_of(
    keys: tuple[Key, ...],
    values: Sequence[bytes | None],
    trusted_from: float,
    max_chars: int,
) -> Resolution | None:
    """What the L2 values of ``keys`` (in order) say, or None when one of them is not there.

    It is fresh only when every entry read is before its soft expiry and was filled after
    ``trusted_from``.
    """
    now = time.time()
    fresh = True
    for index, raw in enumerate(values):
        if raw is None:
            return None
        head, _, rest = raw.partition(b"\n")
        fresh_until, read_at, cap, size = head.split(b" ")
        fresh = fresh and float(fresh_until) >= now and float(read_at) >= trusted_from
        length = int(size)
        if length >= 0:
            # An answer rendered under another cap (a changed setting) is rendered again.
            body = rest[:length] if int(cap) == max_chars else None
            return Resolution(keys[index], rest[length:], keys[: index + 1], fresh, body)
    return Resolution(None, None, keys, fresh)


class L2:
    """Reads (through the auto-pipelined ``pipe`` when there is one), fills and deletes, behind
    a circuit breaker; and the keys whose delete Redis has not taken yet (``pending``), whose
    entries are neither read nor filled meanwhile."""

    def __init__(self, redis: RedisCache, settings: Settings, pipe: RedisPipe | None) -> None:
        self.redis = redis
        self.pipe = pipe
        self.settings = settings
        self.breaker = CircuitBreaker(
            settings.redis_breaker_failures, settings.redis_breaker_reset_seconds
        )
        self.deadline = settings.deadline_ms / 1000
        self.max_chars = settings.answer_max_chars
        # Deletes Redis did not take yet, each with the number of the write that wanted it
        # (a success removes only what it covered).
        self.pending: dict[Key, int] = {}
        self._serial = 0

    def unsure(self, keys: Iterable[Key]) -> bool:
        """Whether Redis may still hold an entry a write wanted gone for one of ``keys``."""
        return bool(self.pending) and not self.pending.keys().isdisjoint(keys)

    async def read(
        self, keys: tuple[Key, ...], trusted_from: float
    ) -> tuple[Resolution | None, bool]:
        """Walk the keys in order through L2 (None when one of them is not there), and
        whether Redis answered."""
        if not self.breaker.allow():
            return None, True
        if self.unsure(keys):
            return None, True  # written while Redis was away: L2 may still hold the old entry
        try:
            values = await self._get(keys)
        except Exception as exc:
            self.failed(exc)
            return None, False
        self.breaker.success()
        return resolution_of(keys, values, trusted_from, self.max_chars), True

    async def _get(self, keys: tuple[Key, ...]) -> list[bytes | None]:
        if self.pipe is not None:
            return await self.pipe.mget([self.redis.full_key(l2_key(k)) for k in keys])
        async with asyncio.timeout(self.deadline):
            return await self.redis.get_many([l2_key(k) for k in keys])

    async def fill(self, resolution: Resolution) -> None:
        """Store what the database said: the match, and a negative entry per key before it.

        Only while the breaker is closed: the probe of a Redis that failed is a read, which
        gives up on its own timeout, never a fill, which the answer (and every request
        coalesced on it) would wait for.
        """
        if self.breaker.is_open or self.unsure(resolution.deps):
            return  # (unsure: a delete Redis has not taken yet would not remove it)
        try:
            await self.redis.set_many(self._entries(resolution))
            self.breaker.success()
        except Exception as exc:
            self.failed(exc)

    def _entries(self, resolution: Resolution) -> list[tuple[str, bytes, float]]:
        """Each key's L2 name, value and time to live (soft expiry plus, for the match, the
        stale window), the soft expiry with jitter."""
        settings = self.settings
        now = time.time()
        entries = []
        for key in resolution.deps:
            fresh_for = settings.cache_negative_ttl_seconds
            hard_extra = 0.0
            if key == resolution.key:
                fresh_for = settings.cache_l2_ttl_seconds
                hard_extra = settings.cache_stale_seconds
            fresh_for = self._jitter(fresh_for)
            value = l2_entry(resolution, key, now + fresh_for, self.max_chars)
            entries.append((l2_key(key), value, fresh_for + hard_extra))
        return entries

    def _jitter(self, seconds: float) -> float:
        spread = self.settings.cache_ttl_jitter
        return seconds * (1 + random.uniform(-spread, spread))

    async def delete(self, keys: Sequence[Key]) -> None:
        """Delete the entries of ``keys`` (in batches; raises what Redis raised)."""
        for start in range(0, len(keys), DELETE_BATCH):
            await self.redis.delete(*(l2_key(k) for k in keys[start : start + DELETE_BATCH]))

    def mark_pending(self, keys: Iterable[Key]) -> dict[Key, int]:
        """Note that Redis has not taken the delete of ``keys`` yet (see ``unmark_pending``)."""
        self._serial += 1
        wanted = dict.fromkeys(keys, self._serial)
        self.pending.update(wanted)
        return wanted

    def unmark_pending(self, done: dict[Key, int]) -> None:
        for key, serial in done.items():
            if self.pending.get(key) == serial:  # else a later write still needs it
                del self.pending[key]

    def failed(self, exc: BaseException) -> None:
        # Only an outage opens the circuit: one request's bad value must not make every
        # other request skip Redis.
        if is_outage(exc):
            self.breaker.failure()
        log.warning("cache.redis_failed", error=type(exc).__name__, open=self.breaker.is_open)

    async def close(self) -> None:
        if self.pipe is not None:
            await self.pipe.close()
