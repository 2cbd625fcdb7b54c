"""Per-client rate limits: 429 with the RateLimit headers, on the fast path and the routes."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
import redis.asyncio as redis

from app.platform.ratelimit import PENDING, Limit, LocalLimiter, RateLimitedError, RedisLimiter
from tests.auth.conftest import eventually
from tests.conftest import AppFactory, Backend, RunningApp
from tests.fixtures.callers import ENRICH, GUEST, Caller, set_limit
from tests.fixtures.databases import REDIS_URL, flush_prefix_at

PROFILE = "/v1/profiles/email/nobody@example.com"


class TestLocalLimiter:
    def test_the_burst_then_the_rate(self) -> None:
        limiter = LocalLimiter()
        limit = Limit(rate=10, burst=3)
        assert [limiter.try_take("a", limit) for _ in range(3)] == [None, None, None]
        refusal = limiter.try_take("a", limit)
        assert isinstance(refusal, RateLimitedError)
        assert refusal.headers is not None
        assert refusal.headers["Retry-After"] == "1"
        time.sleep(0.11)  # one token at 10 per second
        assert limiter.try_take("a", limit) is None
        assert isinstance(limiter.try_take("a", limit), RateLimitedError)

    def test_clients_have_buckets_of_their_own(self) -> None:
        limiter = LocalLimiter()
        limit = Limit(rate=1, burst=1)
        assert limiter.try_take("a", limit) is None
        assert limiter.try_take("a", limit) is not None
        assert limiter.try_take("b", limit) is None

    def test_a_worker_without_redis_gets_its_share(self) -> None:
        limiter = LocalLimiter(share=1 / 4)
        limit = Limit(rate=100, burst=8)
        admitted = sum(limiter.try_take("a", limit) is None for _ in range(10))
        assert admitted == 2


@pytest.fixture
async def redis_client() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


async def drive(limiter: RedisLimiter, client_id: str, limit: Limit) -> bool:
    verdict = limiter.try_take(client_id, limit)
    if verdict is PENDING:
        verdict = await limiter.take(client_id, limit)
    return verdict is None


class TestRedisLimiter:
    async def test_workers_share_one_bucket(self, redis_client: redis.Redis) -> None:
        prefix = f"enrich-test-{uuid.uuid4().hex[:8]}:"
        workers = [RedisLimiter(redis_client, prefix, LocalLimiter()) for _ in range(3)]
        limit = Limit(rate=50, burst=20)
        try:
            started = time.monotonic()
            admitted = 0
            while time.monotonic() - started < 1.0:
                results = await asyncio.gather(
                    *(drive(w, "client", limit) for w in workers for _ in range(5))
                )
                admitted += sum(results)
                await asyncio.sleep(0.005)
            elapsed = time.monotonic() - started
            allowed = limit.burst + limit.rate * elapsed
            # Never more than the bucket gave out; at most a few tokens still held in leases.
            assert allowed * 0.9 <= admitted <= allowed + 1
        finally:
            for w in workers:
                await w.stop()
            await flush_prefix_at(REDIS_URL, prefix)

    async def test_an_idle_worker_gives_its_tokens_back(self, redis_client: redis.Redis) -> None:
        prefix = f"enrich-test-{uuid.uuid4().hex[:8]}:"
        idle = RedisLimiter(redis_client, prefix, LocalLimiter())
        other = RedisLimiter(redis_client, prefix, LocalLimiter())
        limit = Limit(rate=0.001, burst=40)  # no refill to speak of: only the 40 tokens
        try:
            assert await drive(idle, "client", limit)
            await asyncio.sleep(0.01)  # the next lease, fetched in the background
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
            admitted = 0
            while await drive(other, "client", limit):
                admitted += 1
            assert admitted == 40 - 1 - 1  # one spent, one still in the idle worker's hand
        finally:
            await flush_prefix_at(REDIS_URL, prefix)

    async def test_without_redis_each_worker_limits_alone(self) -> None:
        dead = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.05)
        limiter = RedisLimiter(dead, "x:", LocalLimiter(share=1.0))
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
        await set_limit(running, caller.client_id, 2, 3)
        answers = [
            await running.http.post(ENRICH, json=GUEST, headers=caller.headers) for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        refused = answers[-1]
        assert refused.json()["error"] == "too_many_requests"
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["ratelimit-limit"] == "2"
        assert refused.headers["ratelimit-remaining"] == "0"
        assert refused.headers["ratelimit-reset"] == "1"
        await asyncio.sleep(0.6)  # a token comes back every half second
        again = await running.http.post(ENRICH, json=GUEST, headers=caller.headers)
        assert again.status_code == 200

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
        await set_limit(running, caller.client_id, 0.01, 1)  # the next token in 100 s
        answers = [
            await running.http.post(ENRICH, json=GUEST, headers=caller.headers) for _ in range(2)
        ]
        assert [a.status_code for a in answers] == [200, 429]
        assert int(answers[1].headers["retry-after"]) > 90
        await set_limit(running, caller.client_id, 100, 100)
        await asyncio.sleep(0.05)  # tokens now come at the new rate, not in 100 s
        again = await running.http.post(ENRICH, json=GUEST, headers=caller.headers)
        assert again.status_code == 200

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

    async def test_a_new_limit_reaches_the_workers_within_a_second(
        self, backend: Backend, app_factory: AppFactory
    ) -> None:
        from app.auth.service import ClientService
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

        took = await eventually(limited, deadline=1.5)
        assert took < 1.0
