"""The key-value store: the same counters, expiry and deletes in memory and in Redis.

The Redis tests use the machine's Redis under a key prefix of their own (flushed after each),
the memory tests a clock that moves only when told to.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis

from app.core.settings import Settings
from app.platform.kv import Cache, MemoryCache, RedisCache, create_cache
from tests.fixtures.clock import Clock
from tests.fixtures.databases import REDIS_URL, flush_prefix_at
from tests.fixtures.polling import eventually


@pytest.fixture
def prefix(redis_key_prefix: str) -> str:
    """A key prefix of this test's own, inside the run's."""
    return f"{redis_key_prefix}kv-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
async def raw() -> AsyncIterator[redis.Redis]:
    """A client of its own, to look at what the store wrote."""
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_cache(prefix: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache(redis.Redis.from_url(REDIS_URL, client_name=prefix), prefix)
    yield cache
    await cache.close()
    await flush_prefix_at(REDIS_URL, prefix)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Cache:
    if request.param == "memory":
        return MemoryCache()
    cache: RedisCache = request.getfixturevalue("redis_cache")
    return cache


class TestEitherStore:
    async def test_a_value_set_is_read_back_and_replaced(self, store: Cache) -> None:
        assert await store.get("k") is None
        await store.set("k", b"one", ttl=60)
        assert await store.get("k") == b"one"
        await store.set("k", b"two", ttl=60)
        assert await store.get("k") == b"two"

    async def test_delete_removes_every_key_given(self, store: Cache) -> None:
        for key in ("a", "b", "c"):
            await store.set(key, key.encode(), ttl=60)
        await store.delete("a", "b", "never-set")
        await store.delete()  # nothing to delete is no error
        assert [await store.get(key) for key in ("a", "b", "c")] == [None, None, b"c"]

    async def test_a_counter_counts_up_from_one(self, store: Cache) -> None:
        assert [await store.incr("n", ttl=60) for _ in range(3)] == [1, 2, 3]
        assert [await store.incr("m", ttl=60) for _ in range(2)] == [1, 2]

    async def test_counts_reads_counters_in_order_with_zero_where_absent(
        self, store: Cache
    ) -> None:
        await store.incr("x", ttl=60)
        for _ in range(4):
            await store.incr("y", ttl=60)
        assert await store.counts("y", "absent", "x") == [4, 0, 1]

    async def test_a_counter_deleted_starts_again(self, store: Cache) -> None:
        await store.incr("n", ttl=60)
        await store.incr("n", ttl=60)
        await store.delete("n")
        assert await store.counts("n") == [0]
        assert await store.incr("n", ttl=60) == 1

    async def test_ttl_is_the_seconds_left_and_zero_for_a_missing_key(self, store: Cache) -> None:
        await store.incr("n", ttl=60)
        assert 58 <= await store.ttl("n") <= 60
        assert await store.ttl("absent") == 0

    async def test_it_answers_a_ping(self, store: Cache) -> None:
        assert await store.ping() is True


class TestMemoryCache:
    async def test_a_value_expires_after_its_ttl(self) -> None:
        clock = Clock()
        cache = MemoryCache(clock=clock)
        await cache.set("k", b"v", ttl=5)
        clock.advance(4.9)
        assert await cache.get("k") == b"v"
        clock.advance(0.2)
        assert await cache.get("k") is None

    async def test_a_counter_expires_ttl_after_its_first_increment(self) -> None:
        clock = Clock()
        cache = MemoryCache(clock=clock)
        await cache.incr("n", ttl=10)
        clock.advance(6)
        assert await cache.incr("n", ttl=10) == 2  # counting on does not push the expiry back
        assert await cache.ttl("n") == 4
        clock.advance(4.1)
        assert await cache.counts("n") == [0]
        assert await cache.incr("n", ttl=10) == 1  # a new window

    async def test_ttl_rounds_up_to_whole_seconds(self) -> None:
        clock = Clock()
        cache = MemoryCache(clock=clock)
        await cache.set("k", b"v", ttl=3)
        clock.advance(0.5)
        assert await cache.ttl("k") == 3
        clock.advance(2.4)
        assert await cache.ttl("k") == 1

    async def test_past_its_bound_the_least_recently_written_key_goes(self) -> None:
        cache = MemoryCache(max_entries=2)
        await cache.set("a", b"1", ttl=60)
        await cache.set("b", b"2", ttl=60)
        await cache.set("a", b"3", ttl=60)  # written again: now the newest
        await cache.set("c", b"4", ttl=60)
        assert [await cache.get(key) for key in ("a", "b", "c")] == [b"3", None, b"4"]

    async def test_a_counter_is_not_a_value(self) -> None:
        cache = MemoryCache()
        await cache.incr("n", ttl=60)
        assert await cache.get("n") is None

    async def test_close_empties_it(self) -> None:
        cache = MemoryCache()
        await cache.set("k", b"v", ttl=60)
        await cache.close()
        assert await cache.get("k") is None


class TestRedisCache:
    async def test_keys_live_under_its_prefix(
        self, redis_cache: RedisCache, raw: redis.Redis, prefix: str
    ) -> None:
        await redis_cache.set("k", b"v", ttl=60)
        await redis_cache.incr("n", ttl=60)
        stored = {key.decode() for key in await raw.keys(prefix + "*")}
        assert stored == {prefix + "k", prefix + "n"}
        assert await raw.get("k") is None

    async def test_a_value_expires_after_its_ttl(self, redis_cache: RedisCache) -> None:
        await redis_cache.set("k", b"v", ttl=0.05)

        async def gone() -> bool:
            return await redis_cache.get("k") is None

        await eventually(gone, "the value expired")

    async def test_a_ttl_under_a_millisecond_still_expires(
        self, redis_cache: RedisCache, raw: redis.Redis, prefix: str
    ) -> None:
        await redis_cache.set("k", b"v", ttl=0.0001)  # Redis refuses PX 0: one ms instead

        async def gone() -> bool:
            return await raw.exists(prefix + "k") == 0

        await eventually(gone, "the value expired")

    async def test_a_counter_gets_its_ttl_once_at_the_first_increment(
        self, redis_cache: RedisCache, raw: redis.Redis, prefix: str
    ) -> None:
        await redis_cache.incr("n", ttl=100)
        await raw.expire(prefix + "n", 50)  # as if 50 s had passed
        await redis_cache.incr("n", ttl=100)
        # Counting on does not push it back to 100 (how far below 50 it is, is Redis's clock).
        assert 0 < await redis_cache.ttl("n") <= 50

    async def test_close_releases_its_connection(
        self, redis_cache: RedisCache, raw: redis.Redis, prefix: str
    ) -> None:
        await redis_cache.ping()

        async def connected() -> bool:
            return any(c.get("name") == prefix for c in await raw.client_list())

        assert await connected()
        await redis_cache.close()

        async def released() -> bool:
            return not await connected()

        await eventually(released, "the connection closed")


class TestCreateCache:
    async def test_without_redis_the_store_is_in_memory(self) -> None:
        settings = Settings(_env_file=None, redis_url=None)  # type: ignore[call-arg]
        cache = create_cache(settings)
        assert isinstance(cache, MemoryCache)
        assert cache.name == "memory"

    async def test_with_redis_it_is_redis_under_the_settings_prefix(
        self, raw: redis.Redis, prefix: str
    ) -> None:
        settings = Settings(_env_file=None, redis_url=REDIS_URL, redis_prefix=prefix)  # type: ignore[call-arg]
        cache = create_cache(settings)
        try:
            assert isinstance(cache, RedisCache)
            assert cache.name == "redis"
            await cache.set("k", b"v", ttl=60)
            assert await raw.get(prefix + "k") == b"v"
        finally:
            await cache.close()
            await flush_prefix_at(REDIS_URL, prefix)
