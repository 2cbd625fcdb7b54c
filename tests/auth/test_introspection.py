"""Token introspection (RFC 7662): a client sees its own active tokens, an admin sees all."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from app.auth.clients import ClientService
from tests.auth.conftest import forged
from tests.conftest import ClientMaker, OAuthClient, RunningApp
from tests.fixtures.callers import basic, fetch_token, introspect, revoke

INACTIVE = {"active": False}


class TestIntrospection:
    @pytest.mark.parametrize("method", ["basic", "post"])
    async def test_own_token_is_active_with_its_claims(
        self, http: httpx.AsyncClient, make_client: ClientMaker, method: str
    ) -> None:
        client = await make_client("profiles:read events:write")
        token = await fetch_token(http, client)
        response = await introspect(http, client, token, method)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        claims = jwt.decode(token, options={"verify_signature": False})
        assert body["active"] is True
        assert body["client_id"] == client.client_id
        assert body["sub"] == client.client_id
        assert body["scope"] == "events:write profiles:read"
        assert body["token_type"] == "Bearer"
        for name in ("exp", "iat", "iss", "aud", "jti"):
            assert body[name] == claims[name]
        assert body["exp"] > time.time()

    @pytest.mark.parametrize("token", ["garbage", "abc.def.ghi", "eyJhbGciOiJub25lIn0.e30."])
    async def test_garbage_is_inactive(
        self, http: httpx.AsyncClient, make_client: ClientMaker, token: str
    ) -> None:
        client = await make_client()
        response = await introspect(http, client, token)
        assert response.status_code == 200
        assert response.json() == INACTIVE

    async def test_an_expired_token_is_inactive(
        self, running: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        now = int(time.time())
        token = forged(running, client.client_id, iat=now - 7200, nbf=now - 7200, exp=now - 60)
        assert (await introspect(running.http, client, token)).json() == INACTIVE

    async def test_a_revoked_token_is_inactive(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        token = await fetch_token(http, client)
        assert (await revoke(http, client, token)).status_code == 200
        assert (await introspect(http, client, token)).json() == INACTIVE

    async def test_another_clients_token_is_inactive_unless_the_caller_is_admin(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        owner = await make_client("profiles:read")
        stranger = await make_client("profiles:read profiles:write events:write")
        admin = await make_client("admin")
        token = await fetch_token(http, owner)
        assert (await introspect(http, stranger, token)).json() == INACTIVE
        answer = (await introspect(http, admin, token)).json()
        assert answer["active"] is True
        assert answer["client_id"] == owner.client_id

    async def test_a_disabled_clients_token_is_inactive(
        self, running: RunningApp, make_client: ClientMaker
    ) -> None:
        owner = await make_client("profiles:read")
        admin = await make_client("admin")
        token = await fetch_token(running.http, owner)
        async with running.runtime.sessionmaker() as session:
            await ClientService(session).disable(owner.client_id)
            await session.commit()
        await running.runtime.auth_sync.refresh()
        assert (await introspect(running.http, admin, token)).json() == INACTIVE

    async def test_introspection_requires_client_authentication(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        token = await fetch_token(http, client)
        anonymous = await http.post("/oauth/introspect", data={"token": token})
        assert anonymous.status_code == 401
        assert anonymous.json()["error"] == "invalid_client"
        wrong = OAuthClient(client.client_id, "wrong", client.scopes)
        response = await introspect(http, wrong, token)
        assert response.status_code == 401
        assert response.json()["error"] == "invalid_client"
        assert "active" not in response.json()

    async def test_a_missing_token_parameter_is_invalid_request(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        response = await http.post(
            "/oauth/introspect",
            data={},
            headers={"Authorization": basic(client.client_id, client.client_secret)},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
