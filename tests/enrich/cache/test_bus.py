"""The invalidation bus on its own: what a message drops, when a process answers from L1, stop.

Redis is a stand-in here (``FakeRedis``: the few calls the bus makes, answered in memory), so
what is checked is the bus's own rules. The same bus on a real, shared Redis:
tests/enrich/cache/test_bus_redis.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import orjson
import pytest
import redis.asyncio as redis

from app.enrich.cache.bus import HEARD_SECONDS, InvalidationBus
from app.enrich.cache.l1 import L1Cache
from app.enrich.cache.l2 import Resolution, l2_entry, resolution_of
from app.identity.identifiers import Key
from tests.enrich.cache.test_messages import JUNK

JANE: Key = ("email", "jane@example.com")
JOHN: Key = ("email", "john@example.com")
CHANNEL = "test:enrich:invalidate:db0"


def l2_fresh(*, filled_at: float, trusted_from: float) -> bool:
    """Whether an L2 entry for JANE read from the database at ``filled_at`` counts as fresh
    for a process whose bus trusts entries from ``trusted_from``."""
    entry = l2_entry(Resolution(None, None, (JANE,), read_at=filled_at), JANE, time.time() + 60, 0)
    resolution = resolution_of((JANE,), [entry], trusted_from, 0)
    assert resolution is not None
    return resolution.fresh


class FakeRedis:
    """What the bus asks of Redis, in memory: no other process is registered."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.acknowledged: list[tuple[str, bytes]] = []
        self.unregistered: list[bytes] = []

    def register_script(self, _script: str) -> Callable[..., Awaitable[list[bytes]]]:
        async def run(*, keys: list[str], args: list[Any]) -> list[bytes]:
            return []  # registered; and no other member to wait for

        return run

    async def publish(self, channel: str, message: bytes) -> int:
        self.published.append((channel, message))
        return 1

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self)

    async def zrem(self, _key: str, member: bytes) -> int:
        self.unregistered.append(member)
        return 1


class FakePipeline:
    def __init__(self, fake: FakeRedis) -> None:
        self.fake = fake

    async def __aenter__(self) -> FakePipeline:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def sadd(self, key: str, member: bytes) -> None:
        self.fake.acknowledged.append((key, member))

    def expire(self, _key: str, _seconds: int) -> None:
        return None

    async def execute(self) -> list[Any]:
        return []


def cache_of(*keys: Key) -> L1Cache:
    """An L1 holding one answer per key."""
    return filled(L1Cache(100, 60.0, 60.0), *keys)


def filled(l1: L1Cache, *keys: Key) -> L1Cache:
    for key in keys:
        l1.put(((key,), None), b"answer", [key], l1.generation)
    return l1


def holds(l1: L1Cache, key: Key) -> bool:
    return l1.get(((key,), None)) is not None


def bus_on(l1: L1Cache, fake: FakeRedis | None, *, single_process: bool = False) -> InvalidationBus:
    client = cast(redis.Redis, fake)  # (the calls the bus makes, see FakeRedis)
    return InvalidationBus(l1, client, CHANNEL, single_process=single_process)


async def listening_bus(l1: L1Cache, fake: FakeRedis) -> InvalidationBus:
    """A bus as after subscribing: registered, and its first ping answered (which clears
    ``l1``: nothing cached before the process listened is trusted)."""
    bus = bus_on(l1, fake)
    bus._member = b"member-1"
    await bus._register(bus._member)
    await pong(bus)
    assert bus.listening
    return bus


async def pong(bus: InvalidationBus) -> None:
    """Redis answers the ping the listener sent (it hears the channel again)."""
    await bus._handle({"type": "pong", "data": b""}, deque([time.monotonic()]))


async def heard(bus: InvalidationBus, data: bytes) -> None:
    await bus._handle({"type": "message", "channel": CHANNEL.encode(), "data": data}, deque())


class TestInvalidationBus:
    async def test_a_write_here_drops_the_answers_of_another_process(self) -> None:
        writer_redis = FakeRedis()
        writer = bus_on(cache_of(JANE), writer_redis)
        await writer.publish([JANE])
        assert not holds(writer.l1, JANE)  # its own first
        (channel, data), *_ = writer_redis.published
        assert channel == CHANNEL

        reader_redis = FakeRedis()
        reader = await listening_bus(L1Cache(100, 60.0, 60.0), reader_redis)
        filled(reader.l1, JANE, JOHN)
        await heard(reader, data)
        assert not holds(reader.l1, JANE)
        assert holds(reader.l1, JOHN)
        # It says so, under its member id: the writer waits for that before it answers.
        assert [member for _, member in reader_redis.acknowledged] == [b"member-1"]

    async def test_no_identifier_crosses_the_channel_in_clear(self) -> None:
        writer_redis = FakeRedis()
        writer = bus_on(L1Cache(100, 60.0, 60.0), writer_redis)
        await writer.publish([JANE, ("phone", "+14155552671"), ("crm_id", "C-1001")])
        (_, data), *_ = writer_redis.published
        for secret in (b"jane", b"example.com", b"4155552671", b"C-1001"):
            assert secret not in data
        assert len(orjson.loads(data)["deps"]) == 3

    @pytest.mark.parametrize("data", JUNK)
    async def test_junk_on_the_channel_drops_nothing_and_is_not_acknowledged(
        self, data: bytes
    ) -> None:
        fake = FakeRedis()
        bus = await listening_bus(L1Cache(100, 60.0, 60.0), fake)
        filled(bus.l1, JANE)
        await heard(bus, data)
        assert holds(bus.l1, JANE)
        assert bus.listening
        assert fake.acknowledged == []

    async def test_one_process_without_redis_answers_from_l1_and_drops_on_its_own_writes(
        self,
    ) -> None:
        bus = bus_on(cache_of(JANE, JOHN), None, single_process=True)
        await bus.start()
        assert bus.listening
        await bus.publish([JANE])
        assert not holds(bus.l1, JANE)
        assert holds(bus.l1, JOHN)
        await bus.stop()

    async def test_l1_answers_only_while_a_recent_ping_was_answered(self) -> None:
        """Handled in order, a ping's answer says every message published before it was
        handled; a listener that has not had one for HEARD_SECONDS (its event loop busy)
        may have a write's message unread, so L1 does not answer, though still listening."""
        bus = bus_on(L1Cache(100, 60.0, 60.0), FakeRedis())
        bus._member = b"member-1"
        await bus._register(bus._member)
        sent = time.monotonic() - HEARD_SECONDS  # the last ping answered is that old
        await bus._handle({"type": "pong", "data": b""}, deque([sent]))
        assert bus.listening
        assert not bus.hears_now()
        await pong(bus)  # a ping sent now, answered
        assert bus.hears_now()

    async def test_one_process_without_redis_always_hears_itself(self) -> None:
        bus = bus_on(cache_of(JANE), None, single_process=True)
        bus.heard_at -= 3600.0  # (nothing to ping)
        assert bus.hears_now()

    async def test_several_processes_without_redis_never_answer_from_l1(self) -> None:
        """Nothing could tell one worker of another's writes."""
        bus = bus_on(cache_of(JANE), None)
        await bus.start()
        assert not bus.listening
        await bus.stop()

    async def test_after_missing_messages_l1_is_cleared_and_older_l2_entries_distrusted(
        self,
    ) -> None:
        bus = await listening_bus(L1Cache(100, 60.0, 60.0), FakeRedis())
        filled(bus.l1, JANE)
        assert bus.trusted_from == 0.0
        bus._deaf()  # what the listener does when Redis stops answering its pings
        assert not bus.listening
        assert holds(bus.l1, JANE)  # kept, as the stale copy to serve if the database fails
        deaf_since = time.time()
        # Meanwhile not even an L2 entry filled just now is fresh (a write may have failed
        # to delete it on a node that is back before this process hears Redis again).
        assert not l2_fresh(filled_at=deaf_since + 1, trusted_from=bus.trusted_from)
        await pong(bus)  # Redis answers again: messages sent meanwhile may be lost
        assert bus.listening
        assert len(bus.l1) == 0
        assert bus.trusted_from >= deaf_since  # L2 entries filled before may be stale too
        assert not l2_fresh(filled_at=deaf_since - 1, trusted_from=bus.trusted_from)
        assert l2_fresh(filled_at=time.time() + 1, trusted_from=bus.trusted_from)

    async def test_a_process_whose_registration_lapsed_stays_deaf(self) -> None:
        """Writers stop waiting for a member whose registration lapsed: it must not answer
        from L1 then, even though Redis answers its pings."""
        bus = bus_on(cache_of(JANE), FakeRedis())
        await pong(bus)  # never registered
        assert not bus.listening

    async def test_stop_unregisters_so_writers_stop_waiting_at_once(self) -> None:
        fake = FakeRedis()
        bus = await listening_bus(L1Cache(100, 60.0, 60.0), fake)
        await bus.stop()
        assert fake.unregistered == [b"member-1"]

    async def test_stop_leaves_nothing_pending_when_redis_does_not_answer(self) -> None:
        bus = await listening_bus(L1Cache(100, 60.0, 60.0), FakeRedis())

        async def hung_renewal() -> None:
            await asyncio.Event().wait()  # a renewal sent to a Redis that froze

        renewal = asyncio.create_task(hung_renewal())
        bus._renewal = renewal
        await bus.stop()  # the unregistration waits for the renewal: a second, then given up
        assert renewal.done()
        chores = set(bus._chores)
        await asyncio.sleep(0)  # (the done callbacks run)
        assert all(chore.done() for chore in chores)
        assert not bus._chores
