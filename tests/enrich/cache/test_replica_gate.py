"""When a worker may read a replica: only while it hears every write (no servers needed; the
real replica is tests/enrich/test_replicas.py's)."""

from __future__ import annotations

from collections.abc import Sequence

from app.core.replica_reads import ReplicaRouter
from app.core.replicas import UNKNOWN, ReplicaProbe, WriteMarks
from app.core.settings import Settings
from app.enrich.cache.bus import InvalidationBus
from app.enrich.cache.l1 import L1Cache, dep_digest
from app.enrich.cache.store import EnrichCache, Replicas
from app.enrich.document import Match
from app.identity.identifiers import Key

KEY = ("email", "jane@example.com")


async def nothing(_keys: Sequence[Key]) -> Match | None:
    return None


def cache_with_replicas() -> tuple[EnrichCache, WriteMarks]:
    settings = Settings(_env_file=None, environment="test")  # type: ignore[call-arg]
    l1 = L1Cache(100, 30.0, 0.0)
    bus = InvalidationBus(l1, None, "unused", single_process=True)
    marks = WriteMarks(16)
    probe = ReplicaProbe(
        "postgresql+asyncpg://u@primary/db",
        ["postgresql+asyncpg://u@replica/db"],
        marks,
        lambda: True,
        interval=0.1,
        max_lag=5.0,
        timeout=1.0,
    )
    router = ReplicaRouter(marks, probe, lambda: True)
    cache = EnrichCache(settings, nothing, None, bus, l1, None, Replicas(router, [nothing]))
    router.gate = cache.hears_every_write
    marks.settle(marks.snapshot(), 100)
    return cache, marks


class TestReplicaGate:
    async def test_a_write_here_is_noted_before_anything_else(self) -> None:
        cache, marks = cache_with_replicas()
        await cache.invalidate([KEY], 4242)
        assert marks.required([dep_digest(KEY)]) == 4242

    async def test_a_worker_that_was_deaf_waits_for_the_primary_position(self) -> None:
        cache, marks = cache_with_replicas()
        assert cache.hears_every_write()
        assert marks.required([dep_digest(KEY)]) == 100
        cache.bus.trusted_from = 12345.0  # deaf for a while, then heard again
        assert cache.hears_every_write()
        assert marks.required([dep_digest(KEY)]) == UNKNOWN
        marks.settle(marks.snapshot(), 200)
        assert marks.required([dep_digest(KEY)]) == 200

    async def test_a_deaf_worker_reads_no_replica(self) -> None:
        cache, _ = cache_with_replicas()
        cache.bus.listening = False
        assert not cache.hears_every_write()
