from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from app.identity.identifiers import Key
from app.profiles.repository import ProfileRepository
from app.profiles.writes import Invalidation
from app.runtime import Runtime
from tests.conftest import RunningApp


class ProbeInvalidation:
    """Wraps the enrich cache's invalidate; records the keys and what another connection sees."""

    def __init__(
        self, runtime: Runtime, inner: Callable[[Iterable[Key], int | None], Awaitable[None]]
    ) -> None:
        self.runtime = runtime
        self.inner = inner
        self.deleted: list[Key] = []
        self.seen: list[dict[Key, Any]] = []

    async def __call__(self, keys: Iterable[Key], lsn: int | None = None) -> None:
        key_list = list(keys)
        self.deleted.extend(key_list)
        async with self.runtime.sessionmaker() as session:
            self.seen.append(await ProfileRepository(session).owners([("crm_id", "C-1")]))
        await self.inner(key_list, lsn)


def probe(running: RunningApp) -> ProbeInvalidation:
    # What every write reports to (app.profiles.writes), wired to the enrich cache.
    invalidation = running.app.state.parts.get(Invalidation)
    recorder = ProbeInvalidation(running.runtime, invalidation.drop)
    invalidation.drop = recorder
    return recorder


class TestInvalidation:
    async def test_every_write_drops_the_cached_answers_after_its_commit(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        http = running.http
        cache = probe(running)
        await http.put(
            "/v1/profiles/crm_id/C-1",
            json={"identifiers": {"email": "a@example.com"}},
            headers=headers,
        )
        assert (("crm_id", "C-1")) in cache.deleted
        assert (("email", "a@example.com")) in cache.deleted
        # Another connection already saw the new profile when the cache was told.
        assert cache.seen[-1]
        writes = [
            ("PATCH", "/v1/profiles/crm_id/C-1", {"traits": {"a": 1}}),
            (
                "POST",
                "/v1/events",
                {"event_id": "e", "type": "view", "identifiers": {"email": "a@example.com"}},
            ),
            ("POST", "/v1/profiles/bulk", [{"identifiers": {"crm_id": "C-1"}, "segments": ["s"]}]),
        ]
        for method, path, body in writes:
            cache.deleted.clear()
            response = await http.request(method, path, json=body, headers=headers)
            assert response.status_code < 300, response.text
            assert (("email", "a@example.com")) in cache.deleted, path
        cache.deleted.clear()
        assert (await http.delete("/v1/profiles/crm_id/C-1", headers=headers)).status_code == 204
        assert (("crm_id", "C-1")) in cache.deleted
        assert cache.seen[-1] == {}  # the erasure was committed first

    async def test_a_failed_write_invalidates_nothing(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        cache = probe(running)
        response = await running.http.put(
            "/v1/profiles/crm_id/C-1", json={"identifiers": {"phone": "x"}}, headers=headers
        )
        assert response.status_code == 400
        assert cache.deleted == []
