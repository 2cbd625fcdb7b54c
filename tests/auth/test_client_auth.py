"""How a client authenticates at the token endpoint (RFC 6749 2.3.1, 5.2)."""

from __future__ import annotations

import httpx
import pytest

from app.auth.clients import ClientService
from tests.auth.conftest import PROBE_READ
from tests.conftest import ClientMaker, OAuthClient, RunningApp
from tests.fixtures.callers import basic, bearer, fetch_token, request_token

GRANT = {"grant_type": "client_credentials"}
# Headers that legitimately differ between two otherwise identical answers.
VOLATILE_HEADERS = {"date", "x-request-id"}


def comparable(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = {k: v for k, v in response.headers.items() if k not in VOLATILE_HEADERS}
    return response.status_code, headers, response.content


class TestClientAuthentication:
    @pytest.mark.parametrize("method", ["basic", "post"])
    async def test_both_methods_get_a_token(
        self, http: httpx.AsyncClient, make_client: ClientMaker, method: str
    ) -> None:
        client = await make_client("profiles:read")
        response = await request_token(http, client, method=method)
        assert response.status_code == 200
        assert response.json()["token_type"] == "Bearer"

    @pytest.mark.parametrize(
        ("client_id", "secret"),
        [
            ("id:with:colons", "secret:with:colons"),
            ("plus+id", "a+b+c"),
            ("percent%41id", "100%25%zz"),
            ("amp&id=x", "s&e=c"),
            ("space id", "sec ret "),
            ("all :+%& of them", ":+%& all of them"),
        ],
    )
    @pytest.mark.parametrize("method", ["basic", "post"])
    async def test_special_characters_survive_the_encoding(
        self,
        http: httpx.AsyncClient,
        make_client: ClientMaker,
        client_id: str,
        secret: str,
        method: str,
    ) -> None:
        client = await make_client("profiles:read", client_id=client_id, secret=secret)
        response = await request_token(http, client, method=method)
        assert response.status_code == 200, response.text

    async def test_wrong_secret_by_basic_is_invalid_client_with_a_basic_challenge(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        wrong = OAuthClient(client.client_id, client.client_secret + "x", client.scopes)
        response = await request_token(http, wrong)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert response.headers["www-authenticate"].startswith("Basic ")
        assert response.headers["cache-control"] == "no-store"

    async def test_wrong_secret_by_post_is_invalid_client(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        wrong = OAuthClient(client.client_id, "not-the-secret", client.scopes)
        response = await request_token(http, wrong, method="post")
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"

    @pytest.mark.parametrize("method", ["basic", "post"])
    async def test_unknown_client_and_wrong_secret_answer_identically(
        self, http: httpx.AsyncClient, make_client: ClientMaker, method: str
    ) -> None:
        client = await make_client()
        wrong_secret = OAuthClient(client.client_id, "not-the-secret", client.scopes)
        unknown = OAuthClient("enr_000000000000000000000000", "not-the-secret", client.scopes)
        first = await request_token(http, wrong_secret, method=method)
        second = await request_token(http, unknown, method=method)
        assert first.status_code == 401
        assert comparable(first) == comparable(second)

    async def test_no_credentials_is_invalid_client(self, http: httpx.AsyncClient) -> None:
        response = await http.post("/oauth/token", data=GRANT)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"

    async def test_basic_and_form_secret_together_are_refused(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        response = await http.post(
            "/oauth/token",
            data={**GRANT, "client_id": client.client_id, "client_secret": client.client_secret},
            headers={"Authorization": basic(client.client_id, client.client_secret)},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"

    async def test_form_client_id_naming_the_basic_client_is_accepted(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        response = await http.post(
            "/oauth/token",
            data={**GRANT, "client_id": client.client_id},
            headers={"Authorization": basic(client.client_id, client.client_secret)},
        )
        assert response.status_code == 200

    async def test_form_client_id_naming_another_client_is_refused(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        other = await make_client()
        response = await http.post(
            "/oauth/token",
            data={**GRANT, "client_id": other.client_id},
            headers={"Authorization": basic(client.client_id, client.client_secret)},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"

    @pytest.mark.parametrize("method", ["basic", "post"])
    async def test_disabled_client_is_refused(
        self, running: RunningApp, make_client: ClientMaker, method: str
    ) -> None:
        client = await make_client()
        async with running.runtime.sessionmaker() as session:
            await ClientService(session).disable(client.client_id)
            await session.commit()
        response = await request_token(running.http, client, method=method)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"

    @pytest.mark.parametrize("method", ["basic", "post"])
    async def test_rotated_out_secret_is_refused_and_the_new_one_works(
        self, running: RunningApp, make_client: ClientMaker, method: str
    ) -> None:
        client = await make_client()
        async with running.runtime.sessionmaker() as session:
            _, new_secret = await ClientService(session).rotate(client.client_id)
            await session.commit()
        old = await request_token(running.http, client, method=method)
        assert old.status_code == 401
        assert old.json()["error"] == "invalid_client"
        rotated = OAuthClient(client.client_id, new_secret, client.scopes)
        assert (await request_token(running.http, rotated, method=method)).status_code == 200

    async def test_rotating_the_secret_leaves_issued_tokens_valid(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        async with probe.runtime.sessionmaker() as session:
            await ClientService(session).rotate(client.client_id)
            await session.commit()
        # past one revocation poll, so a wrongly revoked token would show
        await probe.runtime.auth_sync.refresh()
        assert (await probe.http.get(PROBE_READ, headers=bearer(token))).status_code == 200
