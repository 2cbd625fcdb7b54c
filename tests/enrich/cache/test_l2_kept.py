"""A write whose L2 delete failed on one shard of a Redis Cluster (a master failing over)
says so in its invalidation: every worker that hears it stops trusting older L2 entries."""

from __future__ import annotations

import time
from collections import deque

from app.enrich.cache.bus import InvalidationBus
from app.enrich.cache.l1 import L1Cache, dep_digest
from app.enrich.cache.messages import new_message, parse_message, says_l2_kept


def test_the_flag_travels_only_when_set_and_the_message_stays_valid() -> None:
    digest = dep_digest(("email", "jane@example.com"))
    _, plain = new_message([digest])
    message_id, flagged = new_message([digest], l2_kept=True)
    assert says_l2_kept(flagged)
    assert not says_l2_kept(plain)
    assert parse_message(flagged) == (message_id, [digest], None)  # (no commit position)
    assert b"jane" not in flagged


async def test_a_worker_that_hears_it_stops_trusting_older_l2_entries() -> None:
    bus = InvalidationBus(L1Cache(10, 30.0, 0.0), None, "channel", single_process=True)
    before = time.time()
    _, message = new_message([dep_digest(("crm_id", "C-1"))], l2_kept=True)
    await bus._handle({"type": "smessage", "data": message}, pings=deque())
    assert bus.trusted_from >= before
    _, plain = new_message([dep_digest(("crm_id", "C-1"))])
    trusted = bus.trusted_from
    await bus._handle({"type": "smessage", "data": plain}, pings=deque())
    assert bus.trusted_from == trusted
