from __future__ import annotations

import httpx

from tests.conftest import ClientMaker


class TestTokenSmoke:
    async def test_basic_credentials_get_a_token(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client.client_id, client.client_secret),
        )
        assert response.status_code == 200
        body = response.json()
        assert body["token_type"] == "Bearer"
        assert body["scope"] == "profiles:read"
        assert response.headers["cache-control"] == "no-store"
