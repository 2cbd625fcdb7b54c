"""The fast path's guards hold for tokens it already knows: a dead token, a missing scope.

The fast path serves /v1/enrich for a token this process verified before, keyed by its
Authorization header, without FastAPI's dependencies. So each test first makes sure the fast
path has served the token (it alone asks the cache for an L1 hit), then takes away what let
it in, and checks the very next request. A token of another client, or of the same client
with the scope, keeps being served by the fast path: the refusal is of that token only.
Across real worker processes: tests/e2e/test_revocation_workers.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from app.auth.clients import ClientService
from tests.conftest import ClientMaker, OAuthClient, RunningApp

SCOPE = "profiles:read"
METHODS: dict[str, dict[str, Any]] = {
    "POST": {"json": {"identifiers": {"email": "jane@example.com"}}},
    "GET": {"params": {"email": "jane@example.com"}},
}


def count_fast_path(running: RunningApp) -> list[int]:
    """Count the requests the fast path served (only it calls ``l1_hit``)."""
    cache = running.runtime.enrich_cache
    inner = cache.l1_hit
    served = [0]

    def counting(*args: Any) -> Any:
        served[0] += 1
        return inner(*args)

    cache.l1_hit = counting  # type: ignore[method-assign,assignment]
    return served


async def bearer(
    http: httpx.AsyncClient, client: OAuthClient, scope: str | None = None
) -> dict[str, str]:
    form = {"grant_type": "client_credentials"}
    if scope is not None:
        form["scope"] = scope
    response = await http.post(
        "/oauth/token", data=form, auth=(client.client_id, client.client_secret)
    )
    assert response.status_code == 200, response.text
    assert scope is None or set(response.json()["scope"].split()) == set(scope.split())
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def enrich(http: httpx.AsyncClient, headers: dict[str, str], method: str) -> httpx.Response:
    return await http.request(method, "/v1/enrich", headers=headers, **METHODS[method])


async def served_by_the_fast_path(
    running: RunningApp, served: list[int], headers: dict[str, str]
) -> None:
    """Have the fast path serve the token, in both methods: a token first seen here goes
    through FastAPI; the next request is the fast path's, which then knows it by its header."""
    for method in METHODS:
        for _ in range(2):
            before = served[0]
            response = await enrich(running.http, headers, method)
            assert response.status_code == 200, response.text
        assert served[0] == before + 1, method


def assert_refused(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert f'error="{error}"' in response.headers["www-authenticate"]
    assert response.json()["error"] == error


class TestADeadTokenOnTheFastPath:
    async def test_a_revoked_token_is_refused_on_the_next_request(
        self, running: RunningApp, make_client: ClientMaker
    ) -> None:
        client, other = await make_client(SCOPE), await make_client(SCOPE)
        token, kept = await bearer(running.http, client), await bearer(running.http, other)
        served = count_fast_path(running)
        await served_by_the_fast_path(running, served, token)
        await served_by_the_fast_path(running, served, kept)

        revoked = await running.http.post(
            "/oauth/revoke",
            data={"token": token["Authorization"][7:]},
            auth=(client.client_id, client.client_secret),
        )
        assert revoked.status_code == 200

        before = served[0]
        for method in METHODS:
            assert_refused(await enrich(running.http, token, method), 401, "invalid_token")
        assert served[0] == before
        await served_by_the_fast_path(running, served, kept)

    async def test_a_disabled_clients_token_is_refused_once_the_process_has_polled(
        self, running: RunningApp, make_client: ClientMaker
    ) -> None:
        client, other = await make_client(SCOPE), await make_client(SCOPE)
        token, kept = await bearer(running.http, client), await bearer(running.http, other)
        served = count_fast_path(running)
        await served_by_the_fast_path(running, served, token)
        await served_by_the_fast_path(running, served, kept)

        async with running.runtime.sessionmaker() as session:
            await ClientService(session).disable(client.client_id)
            await session.commit()
        # The poll every process runs in the background (every 0.25 s), run now.
        await running.runtime.auth_sync.refresh()

        before = served[0]
        for method in METHODS:
            assert_refused(await enrich(running.http, token, method), 401, "invalid_token")
        assert served[0] == before
        await served_by_the_fast_path(running, served, kept)


class TestScopeOnTheFastPath:
    @pytest.mark.parametrize("scopes", ["profiles:write", "profiles:write events:write"])
    async def test_a_token_without_profiles_read_is_403_however_often_it_is_sent(
        self, running: RunningApp, make_client: ClientMaker, scopes: str
    ) -> None:
        client = await make_client(f"{SCOPE} {scopes}")
        narrow = await bearer(running.http, client, scopes)
        full = await bearer(running.http, client, SCOPE)
        served = count_fast_path(running)
        await served_by_the_fast_path(running, served, full)

        before = served[0]
        # Verified the first time, then known by the verifier and by its header, as `full` is.
        for _ in range(3):
            for method in METHODS:
                refused = await enrich(running.http, narrow, method)
                assert_refused(refused, 403, "insufficient_scope")
                assert f'scope="{SCOPE}"' in refused.headers["www-authenticate"]
        assert served[0] == before
        await served_by_the_fast_path(running, served, full)
