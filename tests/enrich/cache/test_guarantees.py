"""Cache guarantees that only show under a race or a fault, each forced deterministically:
the negative entry's shorter TTL, a burst whose shared lookup is abandoned, the second L2
delete against a refill of the old answer, and the cache refresh on a duplicate event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpx
import pytest

from app.enrich.cache.coalesce import AbandonedError, Coalescer
from app.enrich.cache.l2 import l2_key
from app.identity.identifiers import Key
from app.profiles.writes import Invalidation
from tests.conftest import AppFactory, RunningApp, TokenMaker
from tests.fixtures.polling import HANG_GUARD_SECONDS, eventually

JANE_KEY: Key = ("email", "jane@example.com")
JANE = {"identifiers": {"email": "jane@example.com"}, "traits": {"tier": "gold"}}
ASK_JANE = {"identifiers": {"email": "jane@example.com"}}

on_postgres = pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # L2 is Redis


async def token_headers(token_for: TokenMaker) -> dict[str, str]:
    token = await token_for("profiles:read profiles:write events:write")
    return {"Authorization": f"Bearer {token}"}


async def enrich(http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    response = await http.post("/v1/enrich", json=ASK_JANE, headers=headers)
    assert response.status_code == 200, response.text
    return response


def l2_name(running: RunningApp, key: Key) -> str:
    """The Redis key (with the deployment's prefix) of ``key``'s L2 entry."""
    l2 = running.runtime.enrich_cache.l2
    assert l2 is not None
    return l2.redis.full_key(l2_key(key))


@on_postgres
class TestNegativeEntries:
    async def test_an_unknown_guest_is_kept_in_l2_for_the_shorter_negative_ttl(
        self, app_factory: AppFactory, token_for: TokenMaker
    ) -> None:
        """Redis holds "not found" for cache_negative_ttl_seconds, a found profile for the L2
        TTL plus the stale window (no jitter, so the TTLs Redis reports are exact bounds)."""
        running = await app_factory(
            cache_negative_ttl_seconds=30,
            cache_l2_ttl_seconds=300,
            cache_stale_seconds=600,
            cache_ttl_jitter=0,
        )
        headers = await token_headers(token_for)
        client = running.runtime.enrich_cache.l2.redis.client  # type: ignore[union-attr]
        name = l2_name(running, JANE_KEY)

        assert (await enrich(running.http, headers)).json()["found"] is False
        negative_ms = await client.pttl(name)
        assert 0 < negative_ms <= 30_000

        await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        assert (await enrich(running.http, headers)).json()["found"] is True
        found_ms = await client.pttl(name)
        assert 300_000 < found_ms <= 900_000


@pytest.mark.parametrize("how", ["cancelled", "timed out"])
async def test_an_abandoned_shared_lookup_fails_its_waiters_and_frees_the_key(how: str) -> None:
    """The caller doing a burst's work gives up (cancelled, or its deadline passes): the
    caller waiting on it gets AbandonedError at once, and the next call does its own work."""
    coalescer: Coalescer[str, str] = Coalescer()
    never = asyncio.Event()

    async def stuck() -> str:
        await never.wait()
        return "never"

    async def first() -> str:
        async with asyncio.timeout(None) as deadline:
            timeouts.append(deadline)
            return await coalescer.run("jane", stuck)

    timeouts: list[asyncio.Timeout] = []
    leader = asyncio.ensure_future(first())
    await eventually(lambda: "jane" in coalescer._inflight, "the first caller's work started")
    follower = asyncio.ensure_future(coalescer.run("jane", stuck))
    await asyncio.sleep(0)  # the follower now waits on the shared work
    if how == "cancelled":
        leader.cancel()
    else:
        timeouts[0].reschedule(asyncio.get_running_loop().time())
    async with asyncio.timeout(HANG_GUARD_SECONDS):  # (a hang guard: this is at once)
        with pytest.raises(asyncio.CancelledError if how == "cancelled" else TimeoutError):
            await leader
        with pytest.raises(AbandonedError):
            await follower

        async def fresh() -> str:
            return "answer"

        assert await coalescer.run("jane", fresh) == "answer"


def gate_lookup(running: RunningApp) -> tuple[list[int], asyncio.Event]:
    """The first database lookup waits on the returned event; the others go straight through.
    Also counts the callers that reached the coalescer (joined the burst or started it)."""
    cache = running.runtime.enrich_cache
    inner, run = cache.lookup, cache._lookups.run
    gate = asyncio.Event()
    counts = [0, 0]  # lookups, callers

    async def lookup(keys: Sequence[Key]) -> Any:
        counts[0] += 1
        if counts[0] == 1:
            await gate.wait()
        return await inner(keys)

    def joined(key: Any, work: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        counts[1] += 1
        return run(key, work)

    cache.lookup = lookup  # type: ignore[method-assign]
    cache._lookups.run = joined  # type: ignore[method-assign]
    return counts, gate


async def test_a_burst_whose_first_request_is_cancelled_still_gets_answers(
    app_factory: AppFactory, token_for: TokenMaker
) -> None:
    """The request doing the shared lookup goes away (its client disconnected): the request
    coalesced on it is answered 503 with Retry-After (there is no stale copy), not left
    waiting; and the next request does its own lookup and gets the profile."""
    running = await app_factory(cache_l1_max_entries=0)
    headers = await token_headers(token_for)
    await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
    counts, _gate = gate_lookup(running)
    leader = asyncio.ensure_future(running.http.post("/v1/enrich", json=ASK_JANE, headers=headers))
    await eventually(lambda: counts[0] == 1, "the first request's lookup started")
    follower = asyncio.ensure_future(
        running.http.post("/v1/enrich", json=ASK_JANE, headers=headers)
    )
    await eventually(lambda: counts[1] == 2, "the second request joined the burst")
    leader.cancel()
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        with contextlib.suppress(asyncio.CancelledError):
            await leader
        answer = await follower
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "1"
    assert answer.json()["error"] == "service_unavailable"
    async with asyncio.timeout(HANG_GUARD_SECONDS):
        after = await enrich(running.http, headers)
    assert after.json()["traits"] == {"tier": "gold"}
    assert counts[0] == 2  # its own lookup, not the abandoned one


@on_postgres
async def test_the_second_delete_removes_an_old_answer_refilled_after_the_first(
    app_factory: AppFactory, token_for: TokenMaker
) -> None:
    """A reader that loaded the old profile before a write commits may refill L2 after the
    write's first delete. Forced here: the old entry is put back right after the write is
    answered, and the second delete is held until then. It must go with the second delete."""
    running = await app_factory(cache_l1_max_entries=0)  # every read goes to L2
    headers = await token_headers(token_for)
    await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
    assert (await enrich(running.http, headers)).json()["traits"] == {"tier": "gold"}
    client = running.runtime.enrich_cache.l2.redis.client  # type: ignore[union-attr]
    name = l2_name(running, JANE_KEY)
    old_entry = await client.get(name)
    assert old_entry is not None

    cache = running.runtime.enrich_cache
    second_delete, refilled = cache._second_delete, asyncio.Event()

    async def after_the_refill(keys: list[Key]) -> None:
        await refilled.wait()
        await second_delete(keys)

    cache._second_delete = after_the_refill  # type: ignore[method-assign]
    patch = {"traits": {"tier": "platinum"}}
    written = await running.http.patch(
        "/v1/profiles/email/jane@example.com", json=patch, headers=headers
    )
    assert written.status_code == 200, written.text
    assert await client.get(name) is None  # the first delete
    await client.set(name, old_entry, ex=300)  # the late refill of the old answer
    assert (await enrich(running.http, headers)).json()["traits"] == {"tier": "gold"}
    refilled.set()

    async def old_answer_gone() -> bool:
        return await client.get(name) != old_entry

    await eventually(old_answer_gone, "the second delete")
    assert (await enrich(running.http, headers)).json()["traits"] == {"tier": "platinum"}


def purchase(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "purchase",
        "identifiers": {"email": "jane@example.com"},
        "data": {"amount": "10.00", "currency": "EUR"},
    }


async def test_a_duplicate_event_refreshes_an_answer_its_first_delivery_left_stale(
    running: RunningApp, token_for: TokenMaker
) -> None:
    """The first delivery's invalidation is lost (Redis away, say): the cached answer still
    shows no order. The retry is a duplicate (200), counts nothing again, and drops the
    stale answer, so enrich shows the one order."""
    headers = await token_headers(token_for)
    await running.http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
    assert (await enrich(running.http, headers)).json()["metrics"] == {}
    invalidation = running.app.state.parts.get(Invalidation)
    drop = invalidation.drop

    async def lost(keys: Iterable[Key], lsn: int | None = None) -> None:
        return None

    invalidation.drop = lost
    first = await running.http.post("/v1/events", json=purchase("e-1"), headers=headers)
    assert first.status_code == 202, first.text
    stale = await enrich(running.http, headers)
    assert stale.headers["x-cache"] == "hit"
    assert stale.json()["metrics"] == {}  # the lost invalidation, as forced

    invalidation.drop = drop
    again = await running.http.post("/v1/events", json=purchase("e-1"), headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    assert again.json()["profile_id"] == first.json()["profile_id"]
    refreshed = await enrich(running.http, headers)
    assert refreshed.headers["x-cache"] == "miss"
    assert refreshed.json()["metrics"]["order_count"] == 1
    assert refreshed.json()["metrics"]["lifetime_value"] == 10.0
