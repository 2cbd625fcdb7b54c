"""L1: each process's own cache of finished enrich answers (serialized bytes).

An entry remembers the identifier keys its answer depends on (every key tried up to the match,
and all identifiers of the matched profile), so an invalidation for any of them drops it. It
remembers them by digest (``dep_digest``): invalidations between processes travel as digests,
so no identifier crosses Redis pub/sub in clear, and a process drops its entries without
knowing the identifier.

It is bounded in entries and in bytes: an answer is up to ``answer_max_chars`` and its keys up
to 32 identifiers of 320 characters, so a count alone would let callers asking for many
guests (known or not) hold gigabytes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

from app.identity.identifiers import Key
from app.platform.sizes import DICT_SLOT_BYTES, footprint

Digest = bytes
# The Entry object and its slots, beside the body, key and dependencies counted for each.
ENTRY_BYTES = 120
# What the index by dependency costs for each of an entry's dependencies: a dict slot and, for
# a dependency no other entry has, a set of its own (216 bytes with one member).
DEP_INDEX_BYTES = 256


def dep_digest(key: Key) -> Digest:
    """An identifier key's opaque name (16 bytes of BLAKE2b, personalized so that tables of
    plain email hashes do not apply); about 0.5 us, paid on L1 fills and writes only."""
    raw = f"{key[0]}\0{key[1]}".encode()
    return hashlib.blake2b(raw, digest_size=16, person=b"enrich-l1-dep").digest()


@dataclass(slots=True)
class Entry:
    """One finished answer, with how long it is fresh and how long it is kept at all."""

    body: bytes
    fresh_until: float  # monotonic; past it the entry is stale (served only when the DB fails)
    expires: float  # monotonic; past it the entry is gone
    deps: tuple[Digest, ...]
    # The body gzip-compressed, made on the first hit that accepts gzip (compressing a 2 KB
    # answer costs more than the rest of a hit; Personalize asks for gzip on every call).
    # Set through ``L1Cache.add_gzipped``, which counts its bytes.
    gzipped: bytes | None = None
    size: int = 0  # the bytes counted for it while it is held (0 once dropped)


class L1Cache:
    """Answers by key (identifier keys and fields), fresh for ``ttl`` seconds and kept as stale
    copies for ``stale_ttl`` more; at most ``max_entries`` entries and ``max_bytes`` bytes."""

    def __init__(
        self, max_entries: int, ttl: float, stale_ttl: float, *, max_bytes: int = 256 * 1_048_576
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.stale_ttl = stale_ttl
        self._entries: dict[object, Entry] = {}
        self._by_dep: dict[Digest, set[object]] = {}
        self.bytes = 0  # what the entries hold, as counted by ``put`` and ``add_gzipped``
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
        dep_tuple = tuple(dep_digest(dep) for dep in deps)
        # The body, the key (also held by each dependency's set) and the dependencies.
        size = (
            ENTRY_BYTES
            + len(body)
            + 2 * footprint(key)
            + footprint(dep_tuple)
            + len(dep_tuple) * DEP_INDEX_BYTES
            + DICT_SLOT_BYTES
        )
        if size > self.max_bytes:
            return
        if len(self._entries) >= self.max_entries or self.bytes + size > self.max_bytes:
            self._evict(size)
        now = time.monotonic()
        entry = Entry(body, now + self.ttl, now + self.ttl + self.stale_ttl, dep_tuple)
        entry.size = size
        self._entries[key] = entry
        self.bytes += size
        for dep in dep_tuple:
            self._by_dep.setdefault(dep, set()).add(key)

    def add_gzipped(self, entry: Entry, gzipped: bytes) -> None:
        """Keep ``entry``'s gzip form (counted, if the entry is still held)."""
        entry.gzipped = gzipped
        if entry.size:
            entry.size += len(gzipped)
            self.bytes += len(gzipped)
            if self.bytes > self.max_bytes:
                self._evict(0)

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
        for entry in self._entries.values():
            entry.size = 0
        self._entries.clear()
        self._by_dep.clear()
        self.bytes = 0

    def _drop(self, key: object) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry.size
        entry.size = 0
        for dep in entry.deps:
            keys = self._by_dep.get(dep)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_dep[dep]

    def _evict(self, room: int) -> None:
        """Make room for one more entry of ``room`` bytes: drop expired entries first; if that
        is not enough, the oldest eighth (in entries or in bytes; dicts keep insertion order)."""
        now = time.monotonic()
        for key in [k for k, e in self._entries.items() if e.expires < now]:
            self._drop(key)
        if len(self._entries) < self.max_entries and self.bytes + room <= self.max_bytes:
            return
        keep_entries = self.max_entries - max(1, self.max_entries // 8)
        keep_bytes = min(self.max_bytes - room, self.max_bytes * 7 // 8)
        for key in list(self._entries):
            if len(self._entries) <= keep_entries and self.bytes <= keep_bytes:
                break
            self._drop(key)
