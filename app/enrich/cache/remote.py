"""Invalidation beyond this process: L2's entries and every process's L1, over Redis.

``drop_everywhere`` is what a write does once it commits (through ``EnrichCache.invalidate``
in the server, through ``RemoteInvalidator`` in ``enrich import``, which runs outside it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence

from redis.asyncio.connection import parse_url

from app.core.settings import Settings
from app.enrich.cache.bus import InvalidationBus
from app.enrich.cache.l1 import L1Cache
from app.enrich.cache.l2 import DELETE_BATCH, l2_key
from app.identity.identifiers import Key
from app.platform import redis_client
from app.platform.kv import RedisCache


def invalidation_channel(settings: Settings) -> str:
    """The deployment's channel: pub/sub ignores database numbers, so two deployments with
    one prefix in two databases of one Redis would share a channel named after the prefix.

    On a cluster (one database) the channel is a hash tag: the bus's keys (members,
    acknowledgements) start with it, so each of its scripts touches one slot, the channel's."""
    if settings.redis_cluster:
        return redis_client.tagged(f"{settings.redis_prefix}enrich:invalidate", cluster=True)
    dsn = settings.redis_dsn
    database = parse_url(dsn).get("db", 0) if dsn else 0
    return f"{settings.redis_prefix}enrich:invalidate:db{database}"


async def drop_everywhere(
    l2: RedisCache, bus: InvalidationBus, keys: Sequence[Key], lsn: int | None = None
) -> None:
    """Delete the L2 entries of ``keys`` and have every process drop its L1 entries, a batch
    at a time; raises what Redis raised (the caller decides whether to insist).

    On a cluster a delete can fail on one shard while the channel's shard works: the message
    still goes out then, saying so (``l2_kept``)."""
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start : start + DELETE_BATCH]
        try:
            await l2.delete(*(l2_key(k) for k in batch))
        except Exception:
            if l2.cluster:
                # A shard is away (a master failing over): once its replica takes over, it
                # may still hold the entries. Every process drops its L1 entries and stops
                # trusting L2 entries filled before now; the writer insists on the delete.
                bus.trusted_from = max(bus.trusted_from, time.time())
                with contextlib.suppress(Exception):
                    await bus.publish(batch, raise_errors=True, lsn=lsn, l2_kept=True)
            raise
        await bus.publish(batch, raise_errors=True, lsn=lsn)


class RemoteInvalidator:
    """Invalidation for writers outside the server (``enrich import``): L2 and every L1."""

    def __init__(self, settings: Settings) -> None:
        self.l2 = RedisCache.from_settings(settings)
        self.bus_client = redis_client.connect_bus(settings)
        self.bus = InvalidationBus(
            L1Cache(0, 1.0, 0.0),
            self.bus_client,
            invalidation_channel(settings),
            single_process=False,
            ack_timeout=settings.cache_invalidation_ack_ms / 1000,
        )

    async def invalidate(self, keys: Iterable[Key]) -> None:
        await drop_everywhere(self.l2, self.bus, sorted(set(keys)))

    async def close(self) -> None:
        await self.l2.close()
        await self.bus_client.aclose()
