"""The auto-pipelined L2 reader against real Redis servers: order, timeouts, reconnects."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis

from app.platform.redis_pipe import PipeError, RedisPipe
from tests.fixtures.databases import REDIS_URL
from tests.fixtures.polling import HANG_GUARD_SECONDS, eventually
from tests.fixtures.servers import PrivateRedis

# The pipe's timeout where a test is about it (a frozen server never answers, so any value
# fails every call), and a generous one where a test is about something else: a busy
# two-core machine can take longer than the production timeout to answer a healthy server.
TIMEOUT = 0.2
GENEROUS = 5.0


def pipe_for(url: str, timeout: float = GENEROUS) -> RedisPipe:
    return RedisPipe(url, connect_timeout=GENEROUS, timeout=timeout)


async def test_many_concurrent_callers_each_get_their_own_values() -> None:
    prefix = f"enrich-pipe-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    keys = [f"{prefix}{n}" for n in range(500)]
    await client.mset({key: f"value-{n}".encode() for n, key in enumerate(keys)})
    # About order, not timeouts: 500 commands in one write may take a while on a busy machine.
    pipe = pipe_for(REDIS_URL)
    try:
        answers = await asyncio.gather(
            *(pipe.mget([key, f"{prefix}missing", keys[-1 - n]]) for n, key in enumerate(keys))
        )
        for n, answer in enumerate(answers):
            assert answer == [f"value-{n}".encode(), None, f"value-{499 - n}".encode()]
    finally:
        await pipe.close()
        await client.delete(*keys)
        await client.aclose()


async def test_the_database_number_in_the_url_is_selected() -> None:
    key = f"enrich-pipe-{uuid.uuid4().hex[:8]}"
    base = REDIS_URL.rsplit("/", 1)[0]
    client = redis.Redis.from_url(f"{base}/5")
    await client.set(key, b"in five", ex=60)
    five, zero = pipe_for(f"{base}/5"), pipe_for(f"{base}/0")
    try:
        assert await five.mget([key]) == [b"in five"]
        assert await zero.mget([key]) == [None]
    finally:
        await five.close()
        await zero.close()
        await client.delete(key)
        await client.aclose()


async def test_a_password_is_sent_and_a_wrong_one_is_an_error(
    private_redis: PrivateRedis,
) -> None:
    admin = redis.Redis(port=private_redis.port)
    await admin.set("k", b"v")
    await admin.config_set("requirepass", "s3cret")
    await admin.aclose()
    right = pipe_for(f"redis://:s3cret@127.0.0.1:{private_redis.port}/0")
    wrong = pipe_for(f"redis://:nope@127.0.0.1:{private_redis.port}/0")
    try:
        assert await right.mget(["k"]) == [b"v"]
        with pytest.raises(PipeError):
            await wrong.mget(["k"])
    finally:
        await right.close()
        await wrong.close()


async def test_a_frozen_redis_fails_every_waiting_call_within_the_timeout_then_recovers(
    private_redis: PrivateRedis,
) -> None:
    admin = redis.Redis(port=private_redis.port)
    await admin.set("k", b"v")
    await admin.aclose()
    pipe = pipe_for(private_redis.url, timeout=TIMEOUT)
    try:
        await eventually(lambda: answers_k(pipe), "the first answer")
        private_redis.pause()
        # The pipe's own timeout fails each call (a TimeoutError in ``outcomes``); the hang
        # guard only stops a pipe that never gives up from hanging the suite.
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            outcomes = await asyncio.gather(
                *(pipe.mget(["k"]) for _ in range(20)), return_exceptions=True
            )
        assert all(isinstance(outcome, TimeoutError) for outcome in outcomes), outcomes
        private_redis.resume()
        # A new connection, no restart (polled: on a busy machine one call may still time out).
        await eventually(lambda: answers_k(pipe), "an answer after the resume")
    finally:
        if private_redis.paused:
            private_redis.resume()
        await pipe.close()


async def answers_k(pipe: RedisPipe) -> bool:
    try:
        return await pipe.mget(["k"]) == [b"v"]
    except TimeoutError:
        return False


async def test_a_stopped_redis_is_a_connection_error_and_a_restarted_one_is_used_again(
    private_redis: PrivateRedis,
) -> None:
    pipe = pipe_for(private_redis.url)
    try:
        assert await pipe.mget(["k"]) == [None]
        private_redis.stop()
        with pytest.raises(ConnectionError):
            await pipe.mget(["k"])
        with pytest.raises(ConnectionError):
            await pipe.mget(["k"])  # refused on connect
        private_redis.start()
        assert await pipe.mget(["k"]) == [None]
    finally:
        await pipe.close()


async def test_a_caller_that_gives_up_does_not_shift_the_answers_of_the_others() -> None:
    prefix = f"enrich-pipe-{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(REDIS_URL)
    await client.mset({f"{prefix}a": b"A", f"{prefix}b": b"B"})
    pipe = pipe_for(REDIS_URL)
    try:
        abandoned = asyncio.ensure_future(pipe.mget([f"{prefix}a"]))
        kept = asyncio.ensure_future(pipe.mget([f"{prefix}b"]))
        await asyncio.sleep(0)
        abandoned.cancel()
        assert await kept == [b"B"]
        assert await pipe.mget([f"{prefix}a"]) == [b"A"]
    finally:
        await pipe.close()
        await client.delete(f"{prefix}a", f"{prefix}b")
        await client.aclose()


@pytest.mark.parametrize(
    ("url", "supported"),
    [
        ("redis://127.0.0.1:6379/0", True),
        ("redis://user:pw@cache:6380/2", True),
        ("rediss://cache:6380/0", True),
        ("unix:///run/redis.sock?db=1", True),
        ("rediss://cache:6380/0?ssl_cert_reqs=none", False),
        ("redis://cache/0?client_name=enrich", False),
    ],
)
def test_urls_with_options_it_does_not_implement_are_left_to_redis_py(
    url: str, supported: bool
) -> None:
    assert RedisPipe.supports(url) is supported
