"""A real OAuth 2.0 client library (Authlib) works against the service unchanged."""

from __future__ import annotations

import warnings

import authlib.deprecate  # noqa: F401 - it installs an "always" filter on import
import httpx
import pytest

with warnings.catch_warnings():
    # Authlib 1.9 announces its move to "httpx2" on import; the httpx client still works.
    warnings.simplefilter("ignore")
    from authlib.integrations.base_client import OAuthError
    from authlib.integrations.httpx_client import AsyncOAuth2Client

from tests.auth.conftest import PROBE_READ, PROBE_WRITE
from tests.conftest import ClientMaker, RunningApp

BASE = "http://testserver"


def authlib_client(app: RunningApp, client_id: str, secret: str, method: str) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=client_id,
        client_secret=secret,
        token_endpoint_auth_method=method,
        revocation_endpoint_auth_method=method,
        transport=httpx.ASGITransport(app=app.app, client=("203.0.113.7", 50000)),
        base_url=BASE,
    )


class TestAuthlibClient:
    @pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
    async def test_fetches_a_token_and_calls_a_protected_endpoint(
        self, probe: RunningApp, make_client: ClientMaker, method: str
    ) -> None:
        client = await make_client("profiles:read")
        async with authlib_client(probe, client.client_id, client.client_secret, method) as oauth:
            token = await oauth.fetch_token(f"{BASE}/oauth/token", grant_type="client_credentials")
            assert token["token_type"] == "Bearer"
            assert token["scope"] == "profiles:read"
            assert token["expires_in"] == 3600
            response = await oauth.get(f"{BASE}{PROBE_READ}")
            assert response.status_code == 200
            assert response.json()["client_id"] == client.client_id
            assert (await oauth.get(f"{BASE}{PROBE_WRITE}")).status_code == 403

    @pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
    async def test_requests_a_scope_and_an_audience(
        self, probe: RunningApp, make_client: ClientMaker, method: str
    ) -> None:
        client = await make_client("profiles:read profiles:write")
        async with authlib_client(probe, client.client_id, client.client_secret, method) as oauth:
            token = await oauth.fetch_token(
                f"{BASE}/oauth/token",
                grant_type="client_credentials",
                scope="profiles:read",
                audience="https://enrich.example",
            )
            assert token["scope"] == "profiles:read"
            assert (await oauth.get(f"{BASE}{PROBE_READ}")).status_code == 200

    @pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
    async def test_revokes_its_token(
        self, probe: RunningApp, make_client: ClientMaker, method: str
    ) -> None:
        client = await make_client("profiles:read")
        async with authlib_client(probe, client.client_id, client.client_secret, method) as oauth:
            token = await oauth.fetch_token(f"{BASE}/oauth/token", grant_type="client_credentials")
            revoked = await oauth.revoke_token(f"{BASE}/oauth/revoke", token["access_token"])
            assert revoked.status_code == 200
            assert (await oauth.get(f"{BASE}{PROBE_READ}")).status_code == 401

    async def test_a_wrong_secret_raises_the_libraries_oauth_error(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        async with authlib_client(probe, client.client_id, "wrong", "client_secret_basic") as oauth:
            with pytest.raises(OAuthError) as caught:
                await oauth.fetch_token(f"{BASE}/oauth/token", grant_type="client_credentials")
        assert caught.value.error == "invalid_client"
