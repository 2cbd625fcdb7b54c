"""The enrich cache as a caller sees it: X-Cache, freshness after writes, deadline, stale."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest
import redis.exceptions

from app.identity.identifiers import Key
from tests.conftest import AppFactory, Backend, RunningApp, TokenMaker
from tests.fixtures.polling import HANG_GUARD_SECONDS, eventually

JANE = {"identifiers": {"email": "jane@example.com"}, "traits": {"tier": "gold"}}
ASK_JANE = {"identifiers": {"email": "jane@example.com"}}

# Tries at an L2 entry the reader trusts (a hang guard: one is enough on a quiet machine).
FILL_ATTEMPTS = 10


async def auth(token_for: TokenMaker) -> dict[str, str]:
    token = await token_for("profiles:read profiles:write events:write")
    return {"Authorization": f"Bearer {token}"}


async def enrich(http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    response = await http.post("/v1/enrich", json=ASK_JANE, headers=headers)
    assert response.status_code == 200, response.text
    return response


def count_lookups(running: RunningApp, delay: float = 0.0, fail: bool = False) -> list[int]:
    """Wrap the database lookup behind the cache: count calls, optionally slow or failing."""
    cache = running.runtime.enrich_cache
    inner = cache.lookup
    calls = [0]

    async def wrapped(keys: Sequence[Key]):  # type: ignore[no-untyped-def]
        calls[0] += 1
        if delay:
            await asyncio.sleep(delay)
        if fail:
            raise ConnectionRefusedError("database down")
        return await inner(keys)

    cache.lookup = wrapped  # type: ignore[method-assign]
    return calls


class TestCacheLevels:
    async def test_a_repeated_lookup_is_a_hit_with_the_same_answer(
        self, running: RunningApp, token_for: TokenMaker
    ) -> None:
        headers = await auth(token_for)
        await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        first = await enrich(running.http, headers)
        second = await enrich(running.http, headers)
        assert first.headers["x-cache"] == "miss"
        assert second.headers["x-cache"] == "hit"
        assert second.content == first.content
        assert second.json()["stale"] is False

    async def test_without_l1_a_repeat_comes_from_redis_on_postgres(
        self, app_factory: AppFactory, backend: Backend
    ) -> None:
        running = await app_factory(cache_l1_max_entries=0)
        headers = await _token_headers(running)
        await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        calls = count_lookups(running)
        await enrich(running.http, headers)
        second = await enrich(running.http, headers)
        if backend.name == "postgres":
            assert second.headers["x-cache"] == "hit"  # L2
            assert calls[0] == 1
        else:  # the embedded default has no L2
            assert second.headers["x-cache"] == "miss"
            assert calls[0] == 2

    async def test_an_l2_hit_answers_each_field_selection_with_its_own_fields(
        self, app_factory: AppFactory, backend: Backend
    ) -> None:
        running = await app_factory(cache_l1_max_entries=0)
        headers = await _token_headers(running)
        jane = {**JANE, "traits": {"tier": "gold", "city": "Oslo"}, "segments": ["vip"]}
        await running.http.put("/v1/profiles/email/jane@example.com", json=jane, headers=headers)
        await enrich(running.http, headers)  # fills L2 with the whole answer
        picked = await running.http.post(
            "/v1/enrich", json={**ASK_JANE, "fields": "traits.city"}, headers=headers
        )
        whole = await enrich(running.http, headers)
        if backend.name == "postgres":
            assert picked.headers["x-cache"] == whole.headers["x-cache"] == "hit"
        assert picked.json()["traits"] == {"city": "Oslo"}
        assert picked.json()["segments"] == []
        assert whole.json()["traits"] == {"tier": "gold", "city": "Oslo"}
        assert whole.json()["segments"] == ["vip"]

    async def test_an_l2_answer_made_under_another_size_cap_is_cut_to_this_one(
        self, app_factory: AppFactory, backend: Backend
    ) -> None:
        writer = await app_factory(cache_l1_max_entries=0)
        headers = await _token_headers(writer)
        reader = await app_factory(cache_l1_max_entries=0, answer_max_chars=1000)
        calls = count_lookups(reader)
        for attempt in range(FILL_ATTEMPTS):
            big = {**JANE, "segments": [f"segment-{n:04d}" for n in range(300 + attempt)]}
            # The writer's miss fills L2 with the whole answer (the write dropped the last one).
            await writer.http.put("/v1/profiles/email/jane@example.com", json=big, headers=headers)
            assert len((await enrich(writer.http, headers)).content) > 1000
            asked = calls[0]
            answer = await enrich(reader.http, headers)
            assert len(answer.text) <= 1000
            assert answer.json()["truncated"] is True
            if backend.name != "postgres" or answer.headers["x-cache"] == "hit":
                break
            # (A reader that went deaf to the bus a moment, as on a busy machine, trusts no L2
            # entry filled before it heard Redis again: it asked the database. Again.)
        if backend.name == "postgres":
            assert answer.headers["x-cache"] == "hit"
            assert calls[0] == asked  # from the writer's L2 entry, cut again here

    async def test_an_unknown_guest_is_cached_until_it_is_written(
        self, running: RunningApp, token_for: TokenMaker
    ) -> None:
        headers = await auth(token_for)
        assert (await enrich(running.http, headers)).json()["found"] is False
        assert (await enrich(running.http, headers)).headers["x-cache"] == "hit"
        await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        after = await enrich(running.http, headers)
        assert after.json()["found"] is True
        assert after.json()["traits"] == {"tier": "gold"}

    async def test_a_patch_is_seen_by_the_next_read(
        self, running: RunningApp, token_for: TokenMaker
    ) -> None:
        headers = await auth(token_for)
        await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        await enrich(running.http, headers)
        await enrich(running.http, headers)
        await running.http.patch(
            "/v1/profiles/email/jane@example.com",
            json={"traits": {"tier": "platinum"}},
            headers=headers,
        )
        assert (await enrich(running.http, headers)).json()["traits"] == {"tier": "platinum"}


class TestCoalescing:
    async def test_a_burst_of_misses_makes_one_query(
        self, running: RunningApp, token_for: TokenMaker
    ) -> None:
        headers = await auth(token_for)
        await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        calls = count_lookups(running, delay=0.05)
        answers = await asyncio.gather(*(enrich(running.http, headers) for _ in range(20)))
        assert calls[0] == 1
        assert {a.json()["traits"]["tier"] for a in answers} == {"gold"}


class TestDeadline:
    async def test_a_slow_database_is_503_with_retry_after_within_the_deadline(
        self, app_factory: AppFactory
    ) -> None:
        """The database never answers: the deadline alone ends the request (the hang guard is
        far past it and only stops a broken deadline from hanging the suite)."""
        running = await app_factory(deadline_ms=100)
        headers = await _token_headers(running)
        count_lookups(running, delay=HANG_GUARD_SECONDS * 2)
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            response = await running.http.post("/v1/enrich", json=ASK_JANE, headers=headers)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"] == "service_unavailable"

    async def test_a_failing_database_serves_the_cached_answer_marked_stale(
        self, app_factory: AppFactory, backend: Backend
    ) -> None:
        running = await app_factory(cache_l1_ttl_seconds=0.05, cache_l2_ttl_seconds=0.05)
        headers = await _token_headers(running)
        await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        fresh = await enrich(running.http, headers)
        count_lookups(running, fail=True)
        answers = [fresh]

        async def past_the_soft_ttl_of_both_levels() -> bool:
            answers.append(await enrich(running.http, headers))
            return answers[-1].headers["x-cache"] != "hit"

        await eventually(past_the_soft_ttl_of_both_levels, "the cached answer going stale")
        stale = answers[-1]
        assert stale.headers["x-cache"] == "stale"
        body = stale.json()
        assert body["stale"] is True
        assert body["traits"] == fresh.json()["traits"]
        assert set(body) == set(fresh.json())
        if backend.name == "sqlite":
            return  # no L2: a selection never asked for has no stale copy
        # L2 keeps the profile, so a selection never asked for is answered stale too.
        picked = await running.http.post(
            "/v1/enrich", json={**ASK_JANE, "fields": ["metrics"]}, headers=headers
        )
        assert picked.headers["x-cache"] == "stale"
        assert picked.json()["traits"] == {}
        assert picked.json()["stale"] is True


class _HungPipeline:
    """A Redis pipeline that never answers (a frozen Redis), counting its uses."""

    def __init__(self) -> None:
        self.used = 0

    def __call__(self, **_: object) -> _HungPipeline:
        self.used += 1
        return self

    async def __aenter__(self) -> _HungPipeline:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def set(self, *_: object, **__: object) -> None:
        return None

    async def execute(self) -> None:
        await asyncio.Event().wait()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # the embedded default has no L2
class TestRedisFailing:
    async def test_a_miss_does_not_wait_on_filling_a_redis_that_failed(
        self, app_factory: AppFactory
    ) -> None:
        """Redis failed and its retry comes due while a miss is in the database: the answer
        does not wait on writing the result to that Redis."""
        # The tests' relaxed deadline: a fill waited on would never end, so any deadline shows
        # it, and production's 250 ms is missed by a 0.1 s lookup on a loaded machine.
        running = await app_factory()
        headers = await _token_headers(running)
        await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        cache = running.runtime.enrich_cache
        hung = _HungPipeline()
        assert cache.l2 is not None
        cache.l2.redis.client.pipeline = hung  # type: ignore[method-assign]
        breaker = cache.l2.breaker
        breaker.reset_seconds = 0.05
        for _ in range(breaker.threshold):
            breaker.failure()  # open now; due for a retry while the lookup runs
        count_lookups(running, delay=0.1)
        async with asyncio.timeout(HANG_GUARD_SECONDS):
            response = await running.http.post("/v1/enrich", json=ASK_JANE, headers=headers)
        # A fill waited on would hold the answer past the deadline: 503, not 200.
        assert response.status_code == 200, response.text
        assert response.headers["x-cache"] == "miss"
        assert response.json()["traits"]["tier"] == "gold"
        assert hung.used == 0

    async def test_with_redis_silent_and_the_database_failing_l1_answers_stale(
        self, app_factory: AppFactory
    ) -> None:
        running = await app_factory()
        headers = await _token_headers(running)
        await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        fresh = await enrich(running.http, headers)
        bus = running.runtime.enrich_cache.bus
        bus._deaf()  # what the listener does when Redis stops answering its pings
        assert running.runtime.enrich_cache.l2 is not None
        breaker = running.runtime.enrich_cache.l2.breaker
        breaker.reset_seconds = 60.0
        for _ in range(breaker.threshold):
            breaker.failure()
        count_lookups(running, fail=True)
        stale = await enrich(running.http, headers)
        assert stale.headers["x-cache"] == "stale"
        assert stale.json()["stale"] is True
        assert stale.json()["traits"] == fresh.json()["traits"]

    @pytest.mark.parametrize(
        ("error", "opens"),
        [
            (ConnectionRefusedError("refused"), True),
            (TimeoutError("Redis did not answer in time"), True),
            (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), False),
            (redis.exceptions.ResponseError("WRONGTYPE"), False),
        ],
    )
    async def test_only_an_outage_counts_against_redis(
        self, app_factory: AppFactory, error: Exception, opens: bool
    ) -> None:
        running = await app_factory()
        headers = await _token_headers(running)
        cache = running.runtime.enrich_cache
        cache.l1.max_entries = 0  # every request reads L2
        l2 = cache.l2
        assert l2 is not None

        async def failing(names: list[str]) -> list[bytes | None]:
            raise error

        if l2.pipe is not None:
            l2.pipe.mget = failing  # type: ignore[method-assign]
        else:  # pragma: no cover - a Redis URL the pipe does not speak
            l2.redis.client.mget = failing  # type: ignore[method-assign]
        for _ in range(l2.breaker.threshold + 1):
            assert (await enrich(running.http, headers)).json()["found"] is False
        assert l2.breaker.is_open is opens


async def _client(running: RunningApp) -> tuple[str, str]:
    from app.auth.clients import ClientService

    async with running.runtime.sessionmaker() as session:
        client, secret = await ClientService(session).create(
            "cache-test", "profiles:read profiles:write"
        )
        await session.commit()
    return client.client_id, secret


async def _token_headers(running: RunningApp) -> dict[str, str]:
    response = await running.http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=await _client(running)
    )
    return {"Authorization": f"Bearer {response.json()['access_token']}"}
