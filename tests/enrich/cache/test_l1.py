"""L1, each process's own cache of answers: how long an answer is served, how long it is kept
as a stale copy, what a write drops, and what gives way when it is full.

The clock is L1's own (``time.monotonic`` as the module sees it), moved by hand: no test here
waits. The byte budget against a flood of large answers is in tests/enrich/test_memory.py.
"""

from __future__ import annotations

import pytest

from app.enrich.cache import l1 as l1_module
from app.enrich.cache.l1 import L1Cache, dep_digest
from app.identity.identifiers import Key

JANE: Key = ("email", "jane@example.com")
JANE_CRM: Key = ("crm_id", "C-7")
JOHN: Key = ("email", "john@example.com")
TTL = 10.0
STALE = 30.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(l1_module, "time", fake)
    return fake


def asked(*keys: Key, fields: tuple[str, ...] | None = None) -> object:
    """An L1 key as the cache makes it: the identifier keys tried, and the fields' name."""
    return (keys, fields)


def filled(l1: L1Cache, key: object, body: bytes, deps: list[Key]) -> None:
    l1.put(key, body, deps, l1.generation)


class TestL1Cache:
    def test_an_answer_is_served_for_the_ttl_then_no_longer(self, clock: FakeClock) -> None:
        l1 = L1Cache(100, TTL, STALE)
        filled(l1, asked(JANE), b"jane's answer", [JANE])
        clock.now += TTL - 0.1
        entry = l1.fresh(asked(JANE))
        assert entry is not None
        assert entry.body == b"jane's answer"
        clock.now += 0.2
        assert l1.fresh(asked(JANE)) is None

    def test_past_the_ttl_it_is_kept_as_a_stale_copy_for_the_stale_window(
        self, clock: FakeClock
    ) -> None:
        l1 = L1Cache(100, TTL, STALE)
        filled(l1, asked(JANE), b"jane's answer", [JANE])
        clock.now += TTL + STALE - 0.1
        assert l1.fresh(asked(JANE)) is None
        stale = l1.get(asked(JANE))  # what the cache serves, marked stale, if the DB fails
        assert stale is not None
        assert stale.body == b"jane's answer"
        clock.now += 0.2
        assert l1.get(asked(JANE)) is None
        assert (len(l1), l1.bytes) == (0, 0)

    def test_each_selection_of_fields_is_an_answer_of_its_own(self, clock: FakeClock) -> None:
        l1 = L1Cache(100, TTL, STALE)
        filled(l1, asked(JANE), b"everything", [JANE])
        filled(l1, asked(JANE, fields=("traits.tier",)), b"the tier", [JANE])
        whole = l1.fresh(asked(JANE))
        tier = l1.fresh(asked(JANE, fields=("traits.tier",)))
        assert whole is not None
        assert tier is not None
        assert (whole.body, tier.body) == (b"everything", b"the tier")

    def test_a_write_to_any_key_an_answer_depends_on_drops_it(self, clock: FakeClock) -> None:
        l1 = L1Cache(100, TTL, STALE)
        # Asked by guest_ref then email: the answer depends on both (the first missed).
        ref: Key = ("guest_ref", "g-1")
        filled(l1, asked(ref, JANE), b"jane via her email", [ref, JANE])
        filled(l1, asked(JANE_CRM), b"jane via crm", [JANE_CRM])
        filled(l1, asked(JOHN), b"john", [JOHN])
        alone = l1.bytes

        l1.invalidate([ref])  # a profile now has this guest_ref: the first key would match
        assert l1.fresh(asked(ref, JANE)) is None
        assert l1.get(asked(ref, JANE)) is None  # not even a stale copy of a wrong answer
        assert l1.fresh(asked(JANE_CRM)) is not None
        assert l1.fresh(asked(JOHN)) is not None
        assert len(l1) == 2
        assert l1.bytes < alone

    def test_another_process_drops_the_same_answers_by_digest(self, clock: FakeClock) -> None:
        """Invalidations travel between processes as digests (no identifier in clear)."""
        l1 = L1Cache(100, TTL, STALE)
        filled(l1, asked(JANE), b"jane", [JANE])
        filled(l1, asked(JOHN), b"john", [JOHN])
        l1.drop_digests([dep_digest(JANE)])
        assert l1.fresh(asked(JANE)) is None
        assert l1.fresh(asked(JOHN)) is not None

    def test_an_answer_read_before_a_write_is_not_kept_after_it(self, clock: FakeClock) -> None:
        l1 = L1Cache(100, TTL, STALE)
        generation = l1.generation  # the database read starts
        l1.invalidate([JANE])  # a write commits meanwhile
        l1.put(asked(JANE), b"jane before the write", [JANE], generation)
        assert l1.get(asked(JANE)) is None
        assert (len(l1), l1.bytes) == (0, 0)

    def test_when_full_the_oldest_answers_give_way(self, clock: FakeClock) -> None:
        l1 = L1Cache(16, TTL, STALE)
        guests = [("crm_id", f"C-{n}") for n in range(17)]
        for guest in guests:
            filled(l1, asked(guest), b"answer", [guest])
            clock.now += 0.01
        assert len(l1) <= 16
        assert l1.fresh(asked(guests[0])) is None
        assert l1.fresh(asked(guests[-1])) is not None
        assert l1.fresh(asked(guests[-2])) is not None

    def test_answers_past_their_stale_window_give_way_before_live_ones(
        self, clock: FakeClock
    ) -> None:
        l1 = L1Cache(4, TTL, STALE)
        old = ("crm_id", "C-old")
        filled(l1, asked(old), b"old", [old])
        clock.now += TTL + STALE + 1
        live = [("crm_id", f"C-{n}") for n in range(4)]
        for guest in live:
            filled(l1, asked(guest), b"answer", [guest])
        assert l1.get(asked(old)) is None
        assert all(l1.fresh(asked(guest)) is not None for guest in live)

    def test_the_byte_budget_makes_the_oldest_answers_give_way(self, clock: FakeClock) -> None:
        budget = 64 * 1024
        l1 = L1Cache(100_000, TTL, STALE, max_bytes=budget)
        guests = [("crm_id", f"C-{n}") for n in range(40)]
        for guest in guests:
            filled(l1, asked(guest), b"x" * 4000, [guest])
        assert l1.bytes <= budget
        assert 0 < len(l1) < len(guests)
        assert l1.fresh(asked(guests[0])) is None
        assert l1.fresh(asked(guests[-1])) is not None

    def test_an_answer_stored_again_is_counted_once(self, clock: FakeClock) -> None:
        l1 = L1Cache(100, TTL, STALE)
        filled(l1, asked(JANE), b"x" * 1000, [JANE])
        once = l1.bytes
        filled(l1, asked(JANE), b"x" * 1000, [JANE])
        assert (len(l1), l1.bytes) == (1, once)

    def test_with_no_room_at_all_nothing_is_kept(self, clock: FakeClock) -> None:
        """The cache switched off (``ENRICH_CACHE_ENABLED=false`` makes L1 zero entries)."""
        l1 = L1Cache(0, TTL, STALE)
        filled(l1, asked(JANE), b"jane", [JANE])
        assert l1.get(asked(JANE)) is None
        assert len(l1) == 0

    def test_clearing_drops_everything_and_fills_under_way(self, clock: FakeClock) -> None:
        l1 = L1Cache(100, TTL, STALE)
        filled(l1, asked(JANE), b"jane", [JANE])
        generation = l1.generation
        l1.clear()
        l1.put(asked(JOHN), b"john", [JOHN], generation)
        assert (len(l1), l1.bytes) == (0, 0)
