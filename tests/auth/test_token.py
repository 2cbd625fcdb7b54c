"""The token request: grant type, scopes, answer shape (RFC 6749 4.4, 5.1, 5.2)."""

from __future__ import annotations

import httpx
import jwt
import pytest

from tests.auth.conftest import PROBE_READ, PROBE_WRITE
from tests.conftest import ClientMaker, RunningApp
from tests.fixtures.callers import basic, bearer, request_token


class TestTokenRequest:
    async def test_answer_has_the_rfc_6749_shape_and_is_not_cached(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read events:write")
        response = await request_token(http, client)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["cache-control"] == "no-store"
        body = response.json()
        assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
        assert body["token_type"] == "Bearer"
        assert body["expires_in"] == 3600
        assert body["scope"].split() == ["events:write", "profiles:read"]

    async def test_missing_grant_type_is_invalid_request(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        response = await http.post(
            "/oauth/token",
            data={"scope": "profiles:read"},
            headers={"Authorization": basic(client.client_id, client.client_secret)},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"

    @pytest.mark.parametrize("grant", ["password", "authorization_code", "refresh_token", "x"])
    async def test_other_grant_types_are_unsupported(
        self, http: httpx.AsyncClient, make_client: ClientMaker, grant: str
    ) -> None:
        client = await make_client()
        response = await http.post(
            "/oauth/token",
            data={"grant_type": grant},
            headers={"Authorization": basic(client.client_id, client.client_secret)},
        )
        assert response.status_code == 400
        assert response.json()["error"] == "unsupported_grant_type"

    @pytest.mark.parametrize(
        "scope",
        [
            "admin",  # a real scope, not the client's
            "profiles:delete",  # no such scope
            "profiles:read admin",  # partly allowed: nothing is granted
            "profiles:read profiles:delete",
        ],
    )
    async def test_scope_beyond_the_client_is_invalid_scope(
        self, http: httpx.AsyncClient, make_client: ClientMaker, scope: str
    ) -> None:
        client = await make_client("profiles:read profiles:write")
        response = await request_token(http, client, scope=scope)
        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "invalid_scope"
        assert "access_token" not in body

    async def test_a_narrowed_scope_is_echoed_and_enforced(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read profiles:write")
        response = await request_token(probe.http, client, scope="profiles:read")
        assert response.status_code == 200
        body = response.json()
        assert body["scope"] == "profiles:read"
        token = body["access_token"]
        assert jwt.decode(token, options={"verify_signature": False})["scope"] == "profiles:read"
        assert (await probe.http.get(PROBE_READ, headers=bearer(token))).status_code == 200
        assert (await probe.http.get(PROBE_WRITE, headers=bearer(token))).status_code == 403

    @pytest.mark.parametrize("scope", [None, "", "  "])
    async def test_no_scope_grants_all_of_the_clients_scopes(
        self, http: httpx.AsyncClient, make_client: ClientMaker, scope: str | None
    ) -> None:
        client = await make_client("profiles:read profiles:write events:write")
        response = await request_token(http, client, scope=scope)
        assert response.status_code == 200
        assert sorted(response.json()["scope"].split()) == client.scopes

    @pytest.mark.parametrize("method", ["basic", "post"])
    async def test_unknown_extra_form_items_are_ignored(
        self, http: httpx.AsyncClient, make_client: ClientMaker, method: str
    ) -> None:
        client = await make_client("profiles:read")
        response = await request_token(
            http,
            client,
            method=method,
            audience="https://enrich.example",
            resource="https://enrich.example/v1",
            foo="bar",
        )
        assert response.status_code == 200
        assert response.json()["scope"] == "profiles:read"

    async def test_get_is_405_with_a_json_body(self, http: httpx.AsyncClient) -> None:
        response = await http.get("/oauth/token")
        assert response.status_code == 405
        assert response.headers["content-type"].startswith("application/json")
        assert "error" in response.json()

    async def test_a_json_body_is_invalid_request(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        response = await http.post(
            "/oauth/token",
            json={
                "grant_type": "client_credentials",
                "client_id": client.client_id,
                "client_secret": client.client_secret,
            },
        )
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
