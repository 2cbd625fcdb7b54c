"""Discovery: RFC 8414 server metadata and the JWKS."""

from __future__ import annotations

import httpx
import jwt

from tests.conftest import ClientMaker
from tests.fixtures.callers import fetch_token


class TestServerMetadata:
    async def test_metadata_names_every_endpoint_and_capability(
        self, http: httpx.AsyncClient
    ) -> None:
        response = await http.get("/.well-known/oauth-authorization-server")
        assert response.status_code == 200
        meta = response.json()
        assert meta["issuer"] == "http://testserver"
        assert meta["token_endpoint"] == "http://testserver/oauth/token"
        assert meta["revocation_endpoint"] == "http://testserver/oauth/revoke"
        assert meta["introspection_endpoint"] == "http://testserver/oauth/introspect"
        assert meta["jwks_uri"] == "http://testserver/.well-known/jwks.json"
        assert meta["grant_types_supported"] == ["client_credentials"]
        methods = {
            "client_secret_basic",
            "client_secret_post",
            "tls_client_auth",
            "self_signed_tls_client_auth",
        }
        assert set(meta["token_endpoint_auth_methods_supported"]) == methods
        assert set(meta["revocation_endpoint_auth_methods_supported"]) == methods
        assert set(meta["introspection_endpoint_auth_methods_supported"]) == methods
        assert set(meta["scopes_supported"]) == {
            "profiles:read",
            "profiles:write",
            "events:write",
            "admin",
        }

    async def test_the_advertised_endpoints_answer(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        meta = (await http.get("/.well-known/oauth-authorization-server")).json()
        client = await make_client()
        auth = (client.client_id, client.client_secret)
        token_response = await http.post(
            meta["token_endpoint"], data={"grant_type": "client_credentials"}, auth=auth
        )
        assert token_response.status_code == 200
        token = token_response.json()["access_token"]
        introspection = await http.post(
            meta["introspection_endpoint"], data={"token": token}, auth=auth
        )
        assert introspection.json()["active"] is True
        assert (
            await http.post(meta["revocation_endpoint"], data={"token": token}, auth=auth)
        ).status_code == 200
        assert (await http.get(meta["jwks_uri"])).status_code == 200

    async def test_the_issuer_is_the_tokens_iss(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        meta = (await http.get("/.well-known/oauth-authorization-server")).json()
        token = await fetch_token(http, await make_client())
        assert jwt.decode(token, options={"verify_signature": False})["iss"] == meta["issuer"]


class TestJwks:
    async def test_jwks_lists_public_keys_only_with_their_kid(
        self, http: httpx.AsyncClient, make_client: ClientMaker
    ) -> None:
        token = await fetch_token(http, await make_client())
        response = await http.get("/.well-known/jwks.json")
        assert response.status_code == 200
        keys = response.json()["keys"]
        assert len(keys) >= 1
        for key in keys:
            assert key["kty"] == "OKP"
            assert key["crv"] == "Ed25519"
            assert key["alg"] == "EdDSA"
            assert key["use"] == "sig"
            assert key["kid"]
            assert "d" not in key  # no private part
        assert jwt.get_unverified_header(token)["kid"] in {k["kid"] for k in keys}

    async def test_each_key_loads_as_a_pyjwk(self, http: httpx.AsyncClient) -> None:
        for key in (await http.get("/.well-known/jwks.json")).json()["keys"]:
            assert jwt.PyJWK(key).key_id == key["kid"]
