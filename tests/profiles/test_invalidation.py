from __future__ import annotations

from typing import Any

import httpx

from app.cache import Cache
from app.profiles.identity import Key
from app.profiles.invalidation import enrich_cache_key
from app.profiles.repository import ProfileRepository
from app.state import Runtime
from tests.conftest import RunningApp


class ProbeCache:
    """Wraps the cache; on each invalidation records what another connection sees."""

    def __init__(self, runtime: Runtime, inner: Cache, fail: bool = False) -> None:
        self.runtime = runtime
        self.inner = inner
        self.fail = fail
        self.name = inner.name
        self.deleted: list[str] = []
        self.seen: list[dict[Key, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def delete(self, *keys: str) -> None:
        if self.fail:
            raise ConnectionError("cache down")
        self.deleted.extend(keys)
        async with self.runtime.sessionmaker() as session:
            self.seen.append(await ProfileRepository(session).owners([("crm_id", "C-1")]))
        await self.inner.delete(*keys)


def probe(running: RunningApp, *, fail: bool = False) -> ProbeCache:
    cache = ProbeCache(running.runtime, running.runtime.cache, fail)
    running.runtime.cache = cache  # type: ignore[assignment]
    return cache


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
        assert enrich_cache_key(("crm_id", "C-1")) in cache.deleted
        assert enrich_cache_key(("email", "a@example.com")) in cache.deleted
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
            assert enrich_cache_key(("email", "a@example.com")) in cache.deleted, path
        cache.deleted.clear()
        assert (await http.delete("/v1/profiles/crm_id/C-1", headers=headers)).status_code == 204
        assert enrich_cache_key(("crm_id", "C-1")) in cache.deleted
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

    async def test_an_unreachable_cache_is_503_but_the_write_is_saved(
        self, running: RunningApp, headers: dict[str, str]
    ) -> None:
        probe(running, fail=True)
        http: httpx.AsyncClient = running.http
        response = await http.put("/v1/profiles/crm_id/C-1", json={}, headers=headers)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"] == "service_unavailable"
        assert (await http.get("/v1/profiles/crm_id/C-1", headers=headers)).status_code == 200
