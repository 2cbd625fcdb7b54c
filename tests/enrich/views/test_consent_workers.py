"""Consent across real worker processes: `enrich serve --workers 2` on PostgreSQL and Redis,
a view with a purpose made with the real CLI beside it. A withdrawal is answered only once
every worker has dropped its cached answers, so the very next read on any worker shows it."""

from __future__ import annotations

import time
from collections.abc import Awaitable

import httpx
import orjson
import pytest

from tests.auth.test_workers import WORKERS
from tests.conftest import Backend
from tests.enrich.views.test_view_workers import server, views  # noqa: F401  (fixture)
from tests.fixtures.polling import HANG_GUARD_SECONDS
from tests.fixtures.service import RawResponse, Service, bearer_headers
from tests.fixtures.workers import until_every_worker

JANE = {
    "identifiers": {"email": "jane@example.com"},
    "traits": {"tier": "gold"},
    "consent": {"marketing": {"status": "granted", "at": "2026-05-01T10:00:00Z"}},
}
WITHDRAWAL = {"consent": {"marketing": {"status": "denied", "at": "2026-06-01T10:00:00Z"}}}


def answer(response: RawResponse) -> dict[str, object]:
    return orjson.loads(response.body) if response.status == 200 else {}


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_withdrawal_is_visible_on_the_next_read_on_every_worker(
    server: Service,  # noqa: F811
    backend: Backend,
) -> None:
    headers = await bearer_headers(server, backend.database_url)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        stored = await http.put("/v1/profiles/email/jane@example.com", json=JANE, headers=headers)
        assert stored.is_success, stored.text
    await views(
        server,
        "create", "offer", "--fields", "traits.tier", "--rename", "traits.tier=tier",
        "--default", "traits.tier=none", "--purpose", "marketing",
    )  # fmt: skip
    body = orjson.dumps({"identifiers": {"email": "jane@example.com"}, "view": "offer"})
    json_headers = {**headers, "Content-Type": "application/json"}

    def asking() -> Awaitable[RawResponse]:
        return server.request_on_new_connection(
            "POST", "/v1/enrich", headers=json_headers, body=body
        )

    await until_every_worker(
        server, asking, lambda r: answer(r).get("tier") == "gold",
        since=time.monotonic(), within=HANG_GUARD_SECONDS,
    )  # fmt: skip
    cached = await server.on_every_worker(asking, per_worker=2)
    assert {r.headers.get("x-cache") for r in cached} >= {"hit"}

    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        withdrawn = await http.patch(
            "/v1/profiles/email/jane@example.com",
            json=WITHDRAWAL,
            headers={**headers, "Content-Type": "application/merge-patch+json"},
        )
        assert withdrawn.status_code == 200, withdrawn.text

    after = await server.on_every_worker(asking, per_worker=2)
    assert len({r.worker for r in after}) == WORKERS
    for response in after:  # every one, from the first read on: no waiting for a TTL
        assert answer(response) == {
            "found": True,
            "matched": "email",
            "profile_id": None,
            "tier": "none",
            "updated_at": None,
            "consent": {"purpose": "marketing", "status": "denied"},
            "stale": False,
        }
