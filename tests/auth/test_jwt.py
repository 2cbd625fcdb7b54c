"""Access tokens are RFC 9068 JWTs that anyone can check against the published JWKS."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest

from tests.auth.conftest import PROBE_READ, mount_probe
from tests.conftest import AppFactory, ClientMaker, RunningApp
from tests.fixtures.callers import bearer, fetch_token, make_client_on, request_token


async def verify_with_jwks(http: httpx.AsyncClient, token: str, audience: str) -> dict[str, Any]:
    """Verify ``token`` as an outside party would: JWKS from the server, PyJWT's PyJWK."""
    header = jwt.get_unverified_header(token)
    keys = (await http.get("/.well-known/jwks.json")).json()["keys"]
    [jwk] = [k for k in keys if k["kid"] == header["kid"]]
    key = jwt.PyJWK(jwk)
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=[jwk["alg"]], audience=audience, options={"require": ["exp"]}
    )
    return claims


class TestAccessToken:
    async def test_header_names_the_type_and_a_published_key(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        token = await fetch_token(http, await make_client())
        header = jwt.get_unverified_header(token)
        assert header["typ"] == "at+jwt"
        assert header["alg"] == "EdDSA"
        kids = [k["kid"] for k in (await http.get("/.well-known/jwks.json")).json()["keys"]]
        assert header["kid"] in kids

    async def test_claims_follow_rfc_9068(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read events:write")
        before = int(time.time())
        token = await fetch_token(http, client)
        claims = await verify_with_jwks(http, token, "enrich")
        assert claims["iss"] == "http://testserver"  # the public URL by default
        assert claims["aud"] == "enrich"
        assert claims["sub"] == client.client_id
        assert claims["client_id"] == client.client_id
        assert claims["scope"] == "events:write profiles:read"
        assert before - 1 <= claims["iat"] <= int(time.time()) + 1
        assert claims["exp"] - claims["iat"] == 3600
        assert isinstance(claims["jti"], str)
        assert len(claims["jti"]) >= 16

    async def test_every_token_has_its_own_jti(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        client = await make_client()
        tokens = [await fetch_token(http, client) for _ in range(5)]
        jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}
        assert len(jtis) == 5

    async def test_issuer_audience_and_lifetime_come_from_the_settings(
        self, app_factory: AppFactory
    ) -> None:
        app = await app_factory(
            issuer="https://auth.example.com/",
            audience="https://enrich.example.com",
            token_ttl_seconds=600,
        )
        mount_probe(app.app)
        client = await make_client_on(app)
        response = await request_token(app.http, client)
        assert response.json()["expires_in"] == 600
        token = response.json()["access_token"]
        claims = await verify_with_jwks(app.http, token, "https://enrich.example.com")
        assert claims["iss"] == "https://auth.example.com"
        assert claims["exp"] - claims["iat"] == 600
        assert (await app.http.get(PROBE_READ, headers=bearer(token))).status_code == 200
        metadata = (await app.http.get("/.well-known/oauth-authorization-server")).json()
        assert metadata["issuer"] == "https://auth.example.com"

    async def test_es256_keys_work_too(self, app_factory: AppFactory) -> None:
        app = await app_factory(signing_algorithm="ES256")
        mount_probe(app.app)
        client = await make_client_on(app)
        token = await fetch_token(app.http, client)
        assert jwt.get_unverified_header(token)["alg"] == "ES256"
        assert (await verify_with_jwks(app.http, token, "enrich"))["sub"] == client.client_id
        assert (await app.http.get(PROBE_READ, headers=bearer(token))).status_code == 200

    @pytest.mark.parametrize("method", ["basic", "post"])
    async def test_a_token_from_one_worker_works_on_another(
        self, probe: RunningApp, app_factory: AppFactory, make_client: ClientMaker, method: str
    ) -> None:
        other = await app_factory()
        mount_probe(other.app)
        token = await fetch_token(probe.http, await make_client(), method=method)
        assert (await other.http.get(PROBE_READ, headers=bearer(token))).status_code == 200
