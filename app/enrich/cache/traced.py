"""The enrich cache with a span for each level it consults (when tracing is on).

The runtime builds this class instead of ``EnrichCache`` when ``ENRICH_TRACING_ENABLED`` is set,
so with tracing off the hot path runs the plain class and pays nothing, not even a check. On,
an unsampled request pays one ``is_recording()`` per step (``Spans.child``), and a sampled one
gets these children of its server span:

- ``enrich.l1.lookup``: the worker's L1 (``enrich.cache.hit``);
- ``enrich.l2.read``, ``enrich.l2.fill``: Redis (CLIENT spans, ``db.system.name`` redis;
  ``enrich.cache.hit`` on a read: an entry that answers, fresh);
- ``enrich.db.lookup``: the identifier lookup on PostgreSQL or SQLite (a CLIENT span:
  ``db.system.name``, ``db.operation.name``; ``enrich.found``). Coalesced misses share one
  lookup, so its span is the child of the request that started it.

Spans name identifier types and counts, never values (see ``app/platform/tracing.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from opentelemetry.trace import SpanKind

from app.enrich.cache.l1 import Entry
from app.enrich.cache.l2 import Resolution
from app.enrich.cache.store import EnrichCache
from app.enrich.document import Match
from app.enrich.fields import Selection
from app.identity.identifiers import Key
from app.platform.tracing import Spans, recording

# db.system.name values (OTel semantic conventions) by SQLAlchemy dialect name.
DB_SYSTEMS = {"postgresql": "postgresql", "sqlite": "sqlite"}


def _about(keys: tuple[Key, ...]) -> dict[str, Any]:
    """What a span may say about the identifiers asked for: their types and how many."""
    return {
        "enrich.identifier.types": [kind for kind, _ in keys],
        "enrich.identifier.count": len(keys),
    }


class TracedEnrichCache(EnrichCache):
    """``EnrichCache`` whose levels are spans (see the module's docstring)."""

    def __init__(self, *args: Any, spans: Spans, dialect: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spans = spans
        self.db_system = DB_SYSTEMS.get(dialect, dialect)

    def l1_hit(self, keys: tuple[Key, ...], selection: Selection) -> Entry | None:
        if not recording():  # (unsampled: the plain lookup)
            return super().l1_hit(keys, selection)
        with self.spans.child("enrich.l1.lookup", attributes=_about(keys)) as span:
            entry = super().l1_hit(keys, selection)
            span.set_attribute("enrich.cache.hit", entry is not None)
            return entry

    def _l1_entry(self, l1_key: tuple[tuple[Key, ...], object]) -> Entry | None:
        with self.spans.child("enrich.l1.lookup", attributes=_about(l1_key[0])) as span:
            entry = super()._l1_entry(l1_key)
            span.set_attribute("enrich.cache.hit", entry is not None)
            return entry

    async def _l2_read(self, keys: tuple[Key, ...]) -> tuple[Resolution | None, bool]:
        attributes = {"db.system.name": "redis", **_about(keys)}
        with self.spans.child("enrich.l2.read", SpanKind.CLIENT, attributes) as span:
            cached, reachable = await super()._l2_read(keys)
            span.set_attribute("enrich.cache.hit", cached is not None and cached.fresh)
            if not reachable:
                span.set_attribute("error.type", "unreachable")
            return cached, reachable

    async def _l2_fill(self, resolution: Resolution) -> None:
        attributes = {"db.system.name": "redis", **_about(resolution.deps)}
        with self.spans.child("enrich.l2.fill", SpanKind.CLIENT, attributes):
            await super()._l2_fill(resolution)

    async def _lookup(self, keys: tuple[Key, ...]) -> tuple[Match | None, bool]:
        attributes = {
            "db.system.name": self.db_system,
            "db.operation.name": "SELECT",
            **_about(keys),
        }
        with self.spans.child("enrich.db.lookup", SpanKind.CLIENT, attributes) as span:
            match, current = await super()._lookup(keys)
            span.set_attribute("enrich.found", match is not None)
            return match, current


def cache_class(spans: Spans | None, dialect: str) -> Callable[..., EnrichCache]:
    """What builds the process's cache: ``EnrichCache`` itself without a tracer."""
    if spans is None or spans.tracer is None:
        return EnrichCache
    return partial(TracedEnrichCache, spans=spans, dialect=dialect)
