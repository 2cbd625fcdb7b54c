"""L1: each process's own cache of finished enrich answers (serialized bytes).

An entry remembers the identifier keys its answer depends on (every key tried up to the match,
and all identifiers of the matched profile), so an invalidation for any of them drops it. It
remembers them by digest (``dep_digest``): invalidations between processes travel as digests,
so no identifier crosses Redis pub/sub in clear, and a process drops its entries without
knowing the identifier.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

Key = tuple[str, str]
Digest = bytes


def dep_digest(key: Key) -> Digest:
    """An identifier key's opaque name (16 bytes of BLAKE2b, personalized so that tables of
    plain email hashes do not apply); about 0.5 us, paid on L1 fills and writes only."""
    raw = f"{key[0]}\0{key[1]}".encode()
    return hashlib.blake2b(raw, digest_size=16, person=b"enrich-l1-dep").digest()


@dataclass(slots=True)
class Entry:
    body: bytes
    status: str  # "hit" source level: "l1" entries were filled from "l2" or "db"
    fresh_until: float  # monotonic; past it the entry is stale (served only when the DB fails)
    expires: float  # monotonic; past it the entry is gone
    deps: tuple[Digest, ...]
    # The body gzip-compressed, made on the first hit that accepts gzip (compressing a 2 KB
    # answer costs more than the rest of a hit; Personalize asks for gzip on every call).
    gzipped: bytes | None = None


class L1Cache:
    def __init__(self, max_entries: int, ttl: float, stale_ttl: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self._entries: dict[object, Entry] = {}
        self._by_dep: dict[Digest, set[object]] = {}
        # Bumped on every invalidation; a fill that began before a bump is not stored.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: object) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires < time.monotonic():
            self._drop(key)
            return None
        return entry

    def fresh(self, key: object) -> Entry | None:
        """The entry if it is still fresh (one clock reading: the hot path)."""
        entry = self._entries.get(key)
        if entry is None or entry.fresh_until < time.monotonic():
            return None  # a stale entry stays: get() finds it for a stale answer
        return entry

    def put(self, key: object, body: bytes, deps: Iterable[Key], generation: int) -> None:
        """Store an answer computed while ``generation`` was current (else it may be stale)."""
        if generation != self.generation or self.max_entries <= 0:
            return
        if key in self._entries:
            self._drop(key)
        if len(self._entries) >= self.max_entries:
            self._evict()
        now = time.monotonic()
        dep_tuple = tuple(dep_digest(dep) for dep in deps)
        self._entries[key] = Entry(
            body, "l1", now + self.ttl, now + self.ttl + self.stale_ttl, dep_tuple
        )
        for dep in dep_tuple:
            self._by_dep.setdefault(dep, set()).add(key)

    def invalidate(self, keys: Iterable[Key]) -> None:
        self.drop_digests(dep_digest(key) for key in keys)

    def drop_digests(self, digests: Iterable[Digest]) -> None:
        """Drop every entry that depends on one of ``digests`` (see ``dep_digest``)."""
        self.generation += 1
        for dep in digests:
            for key in self._by_dep.pop(dep, ()):
                self._drop(key)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._by_dep.clear()

    def _drop(self, key: object) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        for dep in entry.deps:
            keys = self._by_dep.get(dep)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_dep[dep]

    def _evict(self) -> None:
        # Drop expired entries first; if none, the oldest eighth (dicts keep insertion order).
        now = time.monotonic()
        expired = [k for k, e in self._entries.items() if e.expires < now]
        if not expired:
            expired = list(self._entries)[: max(1, self.max_entries // 8)]
        for key in expired:
            self._drop(key)
