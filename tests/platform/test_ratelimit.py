"""Per-client rate limits: 429 with the RateLimit headers, on the fast path and the routes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as redis

from app.platform.ratelimit import PENDING, Limit, LocalLimiter, RateLimitedError, RedisLimiter
from tests.conftest import AppFactory, Backend, RunningApp
from tests.fixtures.callers import ENRICH, GUEST, Caller, set_limit
from tests.fixtures.clock import Clock
from tests.fixtures.databases import REDIS_URL
from tests.fixtures.polling import HANG_GUARD_SECONDS, eventually
from tests.fixtures.service import RecordProperty

PROFILE = "/v1/profiles/email/nobody@example.com"


class TestLocalLimiter:
    def test_the_burst_then_the_rate(self) -> None:
        clock = Clock()
        limiter = LocalLimiter(clock=clock)
        limit = Limit(rate=4, burst=3)  # (steps in powers of two: exact in floating point)
        assert [limiter.try_take("a", limit) for _ in range(3)] == [None, None, None]
        refusal = limiter.try_take("a", limit)
        assert isinstance(refusal, RateLimitedError)
        assert refusal.headers is not None
        assert refusal.headers["Retry-After"] == "1"
        clock.advance(0.125)  # half a token at 4 per second
        assert isinstance(limiter.try_take("a", limit), RateLimitedError)
        clock.advance(0.125)  # the whole token
        assert limiter.try_take("a", limit) is None
        assert isinstance(limiter.try_take("a", limit), RateLimitedError)

    def test_an_idle_bucket_fills_up_to_the_burst_and_no_further(self) -> None:
        clock = Clock()
        limiter = LocalLimiter(clock=clock)
        limit = Limit(rate=10, burst=3)
        assert [limiter.try_take("a", limit) for _ in range(3)] == [None, None, None]
        clock.advance(3600)
        admitted = sum(limiter.try_take("a", limit) is None for _ in range(10))
        assert admitted == 3

    def test_the_wait_is_until_the_next_token(self) -> None:
        clock = Clock()
        limiter = LocalLimiter(clock=clock)
        limit = Limit(rate=0.25, burst=1)  # a token every 4 s
        assert limiter.try_take("a", limit) is None
        clock.advance(1.5)
        refusal = limiter.try_take("a", limit)
        assert isinstance(refusal, RateLimitedError)
        assert refusal.headers is not None
        assert refusal.headers["Retry-After"] == "3"  # 2.5 s, rounded up

    def test_clients_have_buckets_of_their_own(self) -> None:
        limiter = LocalLimiter(clock=Clock())
        limit = Limit(rate=1, burst=1)
        assert limiter.try_take("a", limit) is None
        assert limiter.try_take("a", limit) is not None
        assert limiter.try_take("b", limit) is None

    def test_a_worker_without_redis_gets_its_share(self) -> None:
        clock = Clock()
        limiter = LocalLimiter(share=1 / 4, clock=clock)
        limit = Limit(rate=100, burst=8)
        admitted = sum(limiter.try_take("a", limit) is None for _ in range(10))
        assert admitted == 2
        clock.advance(1.0)  # a quarter of 100 tokens, in a bucket of 2
        admitted = sum(limiter.try_take("a", limit) is None for _ in range(10))
        assert admitted == 2
        clock.advance(0.0625)  # a token and a half at 25 per second
        admitted = sum(limiter.try_take("a", limit) is None for _ in range(10))
        assert admitted == 1


@pytest.fixture
async def redis_client() -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
def prefix(redis_key_prefix: str) -> str:
    """A key prefix of this test's own, inside the run's (flushed at the end of the run)."""
    return f"{redis_key_prefix}ratelimit-{uuid.uuid4().hex[:8]}:"


def limiter_on(client: redis.Redis, prefix: str, clock: Clock | None = None) -> RedisLimiter:
    """A worker's limiter on the shared Redis, with a Redis timeout that only guards against a
    hang: past production's 0.1 s (a loaded machine gets there) a worker falls back to its
    local share until its clock passes the retry pause, which an injected clock never does by
    itself; the tests here are about the shared bucket, not about a slow Redis."""
    if clock is None:
        return RedisLimiter(client, prefix, LocalLimiter(), HANG_GUARD_SECONDS)
    return RedisLimiter(client, prefix, LocalLimiter(), HANG_GUARD_SECONDS, clock=clock)


async def drive(limiter: RedisLimiter, client_id: str, limit: Limit) -> bool:
    verdict = limiter.try_take(client_id, limit)
    if verdict is PENDING:
        verdict = await limiter.take(client_id, limit)
    return verdict is None


async def admitted_in_a_row(limiter: RedisLimiter, limit: Limit, most: int) -> int:
    """Requests one after another until the first refusal (more than ``most``: a failure)."""
    for admitted in range(most + 1):
        if not await drive(limiter, "client", limit):
            return admitted
    raise AssertionError(f"more than {most} admitted in a row")


async def admitted_until_refused(workers: list[RedisLimiter], limit: Limit) -> list[int]:
    """Requests at every worker, five at a time each, until a round admits none and no worker
    holds a token (leases fetched in the background included); how many each one admitted."""
    admitted = [0] * len(workers)
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        while True:
            rounds = [
                asyncio.gather(*(drive(w, "client", limit) for _ in range(5))) for w in workers
            ]
            results = await asyncio.gather(*rounds)
            for number, mine in enumerate(results):
                admitted[number] += sum(mine)
            for worker in workers:
                await asyncio.gather(*worker._tasks)
            held = sum(lease.held for w in workers for lease in w._leases.values())
            if not any(any(mine) for mine in results) and held == 0:
                return admitted


async def status_is(status: Callable[[], Awaitable[int]], expected: int) -> bool:
    return await status() == expected


async def age_bucket(client: redis.Redis, limiter: RedisLimiter, seconds: float) -> None:
    """Move the bucket's last update back by ``seconds``: its refill (on Redis's clock, in the
    script) then counts them as passed."""
    key = limiter.prefix + "client"
    stored = float(await client.hget(key, "t"))
    await client.hset(key, "t", repr(stored - seconds))


class TestRedisLimiter:
    async def test_workers_share_one_bucket_and_its_refill(
        self, redis_client: redis.Redis, prefix: str
    ) -> None:
        clock = Clock()
        workers = [limiter_on(redis_client, prefix, clock) for _ in range(3)]
        # A token every 1000 s: while the test runs the bucket refills by a fraction of one.
        limit = Limit(rate=0.001, burst=20)
        try:
            first = await admitted_until_refused(workers, limit)
            # Never more than the bucket gave out, nothing left in a lease, and shared.
            assert sum(first) == limit.burst, first
            assert all(first), first
            # Refused locally until Redis's next token, then asked again.
            refusal = workers[0].try_take("client", limit)
            assert isinstance(refusal, RateLimitedError)
            assert refusal.headers is not None
            assert 990 <= int(refusal.headers["Retry-After"]) <= 1000
            await age_bucket(redis_client, workers[0], 5000)  # five tokens at 0.001 per second
            assert await admitted_until_refused(workers, limit) == [0, 0, 0]  # not asked yet
            clock.advance(1000)
            again = await admitted_until_refused(workers, limit)
            assert sum(again) == 5, again
        finally:
            for w in workers:
                await w.stop()

    async def test_the_refill_follows_redis_clock(
        self, redis_client: redis.Redis, prefix: str, record_property: RecordProperty
    ) -> None:
        # The wiring on real clocks (the arithmetic is the test above): a drained bucket at
        # 2 per second admits again. The deadline and the count only guard against a hang.
        limiter = limiter_on(redis_client, prefix)
        limit = Limit(rate=2, burst=1)
        try:
            await admitted_in_a_row(limiter, limit, most=1000)
            took = await eventually(lambda: drive(limiter, "client", limit), "a token came back")
            record_property("token_back_s", round(took, 3))
        finally:
            await limiter.stop()

    async def test_an_idle_worker_gives_its_tokens_back(
        self, redis_client: redis.Redis, prefix: str
    ) -> None:
        idle = limiter_on(redis_client, prefix, Clock())
        other = limiter_on(redis_client, prefix, Clock())
        limit = Limit(rate=0.001, burst=40)  # no refill to speak of: only the 40 tokens
        assert await drive(idle, "client", limit)
        await asyncio.gather(*idle._tasks)  # the next lease, fetched in the background
        lease = idle._leases["client"]
        granted, _ = await idle._script(
            keys=[idle.prefix + "client"], args=[limit.rate, limit.burst, 5]
        )
        lease.held += granted  # as if it had been busy: a lease of a few tokens
        held = lease.held
        assert idle.sweep() == []  # used since the last sweep
        returns = idle.sweep()  # idle now: all but one token go back
        assert returns == [("client", limit, held - 1)]
        await idle._give_back(returns)
        admitted = await admitted_in_a_row(other, limit, most=limit.burst)
        assert admitted == 40 - 1 - 1  # one spent, one still in the idle worker's hand

    async def test_without_redis_each_worker_limits_alone(self) -> None:
        dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.05)
        limiter = RedisLimiter(dead, "x:", LocalLimiter(share=1.0, clock=Clock()), clock=Clock())
        limit = Limit(rate=0.001, burst=2)
        try:
            assert [await drive(limiter, "c", limit) for _ in range(3)] == [True, True, False]
        finally:
            await dead.aclose()


class TestRateLimitedRequests:
    async def test_over_the_limit_is_429_with_the_ratelimit_headers(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        await set_limit(running, caller.client_id, 0.01, 3)  # the next token in 100 s
        answers = [
            await running.http.post(ENRICH, json=GUEST, headers=caller.headers) for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        refused = answers[-1]
        assert refused.json()["error"] == "too_many_requests"
        # 100 s less the time the requests took (the rounding: TestLocalLimiter)
        assert 90 < int(refused.headers["retry-after"]) <= 100
        assert refused.headers["ratelimit-reset"] == refused.headers["retry-after"]
        assert refused.headers["ratelimit-limit"] == "0.01"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit-policy"] == "0.01;w=1;burst=3"

    async def test_a_refused_client_is_admitted_again_when_a_token_comes(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        # On real clocks: the refill's arithmetic is TestLocalLimiter's and TestRedisLimiter's.
        # A token a second, so two requests in a row meet an empty bucket (the deadlines only
        # guard against a hang).
        caller: Caller = await new_caller()
        await set_limit(running, caller.client_id, 1, 1)

        async def status() -> int:
            answer = await running.http.post(ENRICH, json=GUEST, headers=caller.headers)
            return answer.status_code

        await eventually(lambda: status_is(status, 429), "a refusal")
        await eventually(lambda: status_is(status, 200), "an admission after the refusal")

    async def test_the_routes_share_the_limit_with_the_fast_path(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        await set_limit(running, caller.client_id, 0.01, 2)
        http = running.http
        assert (await http.get(PROFILE, headers=caller.headers)).status_code == 404
        assert (await http.post(ENRICH, json=GUEST, headers=caller.headers)).status_code == 200
        for path in (PROFILE, ENRICH):
            refused = await http.get(path, headers=caller.headers, params={"email": "x@y.z"})
            assert refused.status_code == 429, path
            assert refused.headers["ratelimit-limit"] == "0.01"

    async def test_a_client_at_its_limit_does_not_hold_up_another(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        noisy: Caller = await new_caller()
        quiet: Caller = await new_caller()
        await set_limit(running, noisy.client_id, 0.01, 1)
        await set_limit(running, quiet.client_id, 1000, 1000)
        http = running.http
        noisy_calls = [http.post(ENRICH, json=GUEST, headers=noisy.headers) for _ in range(60)]
        quiet_calls = [http.post(ENRICH, json=GUEST, headers=quiet.headers) for _ in range(30)]
        answers = await asyncio.gather(*noisy_calls, *quiet_calls)
        noisy_statuses = [a.status_code for a in answers[:60]]
        assert noisy_statuses.count(200) == 1
        assert noisy_statuses.count(429) == 59
        assert [a.status_code for a in answers[60:]] == [200] * 30

    async def test_a_raised_limit_applies_at_once_not_after_the_old_wait(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        await set_limit(running, caller.client_id, 0.001, 1)  # the next token in 1000 s
        answers = [
            await running.http.post(ENRICH, json=GUEST, headers=caller.headers) for _ in range(2)
        ]
        assert [a.status_code for a in answers] == [200, 429]
        assert int(answers[1].headers["retry-after"]) > 900
        await set_limit(running, caller.client_id, 100, 100)

        async def admitted() -> bool:
            answer = await running.http.post(ENRICH, json=GUEST, headers=caller.headers)
            return answer.status_code == 200

        # Tokens come at the new rate (one in 10 ms); the old wait would outlast the deadline.
        await eventually(admitted, "an admission at the new rate")

    async def test_the_default_comes_from_the_settings(self, app_factory: AppFactory) -> None:
        app = await app_factory(rate_limit_rps=0.01, rate_limit_burst=2)
        from tests.auth.conftest import make_client_on
        from tests.fixtures.callers import fetch_token

        client = await make_client_on(app, "profiles:read")
        headers = {"Authorization": f"Bearer {await fetch_token(app.http, client)}"}
        statuses = [
            (await app.http.post(ENRICH, json=GUEST, headers=headers)).status_code for _ in range(3)
        ]
        assert statuses == [200, 200, 429]

    async def test_zero_means_no_limit_and_switched_off_nothing_is_limited(
        self, app_factory: AppFactory
    ) -> None:
        from tests.auth.conftest import make_client_on
        from tests.fixtures.callers import fetch_token

        for overrides in ({"rate_limit_rps": 0}, {"rate_limit_enabled": False}):
            app = await app_factory(rate_limit_burst=1, **overrides)
            client = await make_client_on(app, "profiles:read")
            headers = {"Authorization": f"Bearer {await fetch_token(app.http, client)}"}
            answers = await asyncio.gather(
                *(app.http.post(ENRICH, json=GUEST, headers=headers) for _ in range(20))
            )
            assert {a.status_code for a in answers} == {200}, overrides

    async def test_a_new_limit_reaches_the_other_workers(
        self, backend: Backend, app_factory: AppFactory, record_property: RecordProperty
    ) -> None:
        from app.auth.clients import ClientService
        from tests.auth.conftest import make_client_on
        from tests.fixtures.callers import fetch_token

        first = await app_factory()
        second = await app_factory()
        client = await make_client_on(first, "profiles:read")
        headers = {"Authorization": f"Bearer {await fetch_token(first.http, client)}"}
        async with first.runtime.sessionmaker() as session:
            await ClientService(session).limit(client.client_id, 0.01, 1)
            await session.commit()

        async def limited() -> bool:
            answer = await second.http.post(ENRICH, json=GUEST, headers=headers)
            return answer.status_code == 429

        # Promised within a second (each worker polls every half second): reported, not asserted.
        took = await eventually(limited, "the new limit in the other worker")
        record_property("new_limit_reached_s", round(took, 3))
