"""Views across real worker processes: `enrich serve --workers 2` on PostgreSQL and Redis,
changed with the real CLI beside it. No worker is told: each learns of a new version or a
retirement from its own poll, and each answers from its own cache."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from tests.auth.test_workers import WORKERS
from tests.conftest import Backend
from tests.fixtures.polling import HANG_GUARD_SECONDS
from tests.fixtures.servers import ServiceFactory
from tests.fixtures.service import RawResponse, RecordProperty, Service, bearer_headers
from tests.fixtures.workers import run_beside, until_every_worker

JANE = {
    "identifiers": {"email": "jane@example.com"},
    "traits": {"tier": "gold"},
    "segments": ["vip"],
}


@pytest.fixture
async def server(backend: Backend, services: ServiceFactory) -> Service:
    return await services.start(
        backend.database_url, backend.redis_url, workers=WORKERS, redis_prefix=backend.redis_prefix
    )


async def views(server: Service, *args: str) -> str:
    result = await run_beside(server, "views", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_versions_and_retirement_reach_every_worker(
    server: Service, backend: Backend, record_property: RecordProperty
) -> None:
    headers = await bearer_headers(server, backend.database_url)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        stored = await http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        assert stored.is_success, stored.text
    await views(
        server, "create", "offer", "--fields", "traits.tier", "--rename", "traits.tier=tier"
    )

    def asking(view: str):  # type: ignore[no-untyped-def]
        body = orjson.dumps({"identifiers": {"email": "jane@example.com"}, "view": view})
        json_headers = {**headers, "Content-Type": "application/json"}
        return lambda: server.request_on_new_connection(
            "POST", "/v1/enrich", headers=json_headers, body=body
        )

    def answer(response: RawResponse) -> dict[str, object]:
        return orjson.loads(response.body) if response.status == 200 else {}

    first = await until_every_worker(
        server, asking("offer"), lambda r: answer(r).get("tier") == "gold",
        since=time.monotonic(), within=HANG_GUARD_SECONDS,
    )  # fmt: skip
    assert len(first) == WORKERS

    await views(server, "create", "offer", "--fields", "segments")
    await until_every_worker(
        server, asking("offer"), lambda r: answer(r).get("segments") == ["vip"],
        since=time.monotonic(), within=HANG_GUARD_SECONDS,
    )  # fmt: skip
    pinned = await server.on_every_worker(asking("offer@1"), per_worker=2)
    assert all(answer(r).get("tier") == "gold" and "segments" not in answer(r) for r in pinned)
    assert {r.headers.get("x-cache") for r in pinned} >= {"hit"}  # its cached copies serve

    await views(server, "retire", "offer@1")
    took = await until_every_worker(
        server, asking("offer@1"), lambda r: r.status == 410,
        since=time.monotonic(), within=HANG_GUARD_SECONDS,
    )  # fmt: skip
    record_property("slowest_worker_s", round(max(took.values()), 3))
    after = await server.on_every_worker(asking("offer@1"))
    assert [r.status for r in after] == [410] * len(after)
    latest = await server.on_every_worker(asking("offer"))
    assert all(answer(r).get("segments") == ["vip"] for r in latest)
