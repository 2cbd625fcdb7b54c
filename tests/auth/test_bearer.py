"""Protected endpoints: Bearer tokens and RFC 6750 answers (the require_scope dependency)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.auth.conftest import PROBE_ADMIN, PROBE_READ, PROBE_WRITE, forged, sign, valid_claims
from tests.conftest import ClientMaker, RunningApp
from tests.fixtures.callers import bearer, fetch_token, revoke
from tests.fixtures.clock import Clock


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def alg_none(running: RunningApp, client_id: str) -> str:
    header = {"alg": "none", "typ": "at+jwt", "kid": running.runtime.keyring.active_kid}
    return f"{b64url(header)}.{b64url(valid_claims(running, client_id))}."


def foreign_key_same_kid(running: RunningApp, client_id: str) -> str:
    header = {"kid": running.runtime.keyring.active_kid, "typ": "at+jwt"}
    stranger = ed25519.Ed25519PrivateKey.generate()
    return jwt.encode(valid_claims(running, client_id), stranger, algorithm="EdDSA", headers=header)


def foreign_key_unknown_kid(running: RunningApp, client_id: str) -> str:
    stranger = ed25519.Ed25519PrivateKey.generate()
    headers = {"kid": "20260101-deadbeef", "typ": "at+jwt"}
    return jwt.encode(
        valid_claims(running, client_id), stranger, algorithm="EdDSA", headers=headers
    )


def now() -> int:
    return int(time.time())


BAD_TOKENS: dict[str, Callable[[RunningApp, str], str]] = {
    "alg_none": alg_none,
    "foreign_key_same_kid": foreign_key_same_kid,
    "foreign_key_unknown_kid": foreign_key_unknown_kid,
    "wrong_audience": lambda r, c: forged(r, c, aud="someone-else"),
    "wrong_issuer": lambda r, c: forged(r, c, iss="https://evil.example"),
    "expired": lambda r, c: forged(r, c, iat=now() - 7200, nbf=now() - 7200, exp=now() - 60),
    "not_yet_valid": lambda r, c: forged(r, c, nbf=now() + 600),
    "no_jti": lambda r, c: sign(r, {k: v for k, v in valid_claims(r, c).items() if k != "jti"}),
    "wrong_typ_jwt": lambda r, c: sign(r, valid_claims(r, c), typ="JWT"),
    "no_typ": lambda r, c: jwt.encode(
        valid_claims(r, c),
        r.runtime.keyring.verification_key(r.runtime.keyring.active_kid or "").private,  # type: ignore[union-attr]
        algorithm="EdDSA",
        headers={"kid": r.runtime.keyring.active_kid},
    ),
    "garbage": lambda r, c: "garbage",
    "three_garbage_parts": lambda r, c: "abc.def.ghi",
    "huge": lambda r, c: "a" * 5000,
    "truncated_signature": lambda r, c: forged(r, c)[:-10],
}


def assert_invalid_token(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert response.json()["error"] == "invalid_token"


class TestRequireScope:
    async def test_a_valid_token_is_accepted_again_and_again(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        for _ in range(3):  # the first verifies the signature, the rest hit the cache
            response = await probe.http.get(PROBE_READ, headers=bearer(token))
            assert response.status_code == 200
            assert response.json()["client_id"] == client.client_id

    async def test_no_authorization_header_is_401_with_a_bare_challenge(
        self, probe: RunningApp
    ) -> None:
        response = await probe.http.get(PROBE_READ)
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Bearer realm=")
        assert "error=" not in challenge
        assert "error" in response.json()

    async def test_another_auth_scheme_counts_as_no_token(self, probe: RunningApp) -> None:
        response = await probe.http.get(PROBE_READ, headers={"Authorization": "Basic YTpi"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer realm=")

    async def test_an_empty_bearer_token_is_invalid_request(self, probe: RunningApp) -> None:
        response = await probe.http.get(PROBE_READ, headers={"Authorization": "Bearer"})
        assert response.status_code == 400
        assert 'error="invalid_request"' in response.headers["www-authenticate"]

    @pytest.mark.parametrize("kind", list(BAD_TOKENS))
    async def test_bad_tokens_are_refused_as_invalid_token(
        self, probe: RunningApp, make_client: ClientMaker, kind: str
    ) -> None:
        client = await make_client("profiles:read")
        token = BAD_TOKENS[kind](probe, client.client_id)
        assert_invalid_token(await probe.http.get(PROBE_READ, headers=bearer(token)))

    async def test_a_forged_token_does_not_poison_the_cache_for_the_real_one(
        self, probe: RunningApp, make_client: ClientMaker
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        assert (await probe.http.get(PROBE_READ, headers=bearer(token))).status_code == 200
        tampered = foreign_key_same_kid(probe, client.client_id)
        assert_invalid_token(await probe.http.get(PROBE_READ, headers=bearer(tampered)))
        assert (await probe.http.get(PROBE_READ, headers=bearer(token))).status_code == 200

    @pytest.mark.parametrize(
        ("path", "scope"), [(PROBE_WRITE, "profiles:write"), (PROBE_ADMIN, "admin")]
    )
    async def test_a_missing_scope_is_403_insufficient_scope(
        self, probe: RunningApp, make_client: ClientMaker, path: str, scope: str
    ) -> None:
        token = await fetch_token(probe.http, await make_client("profiles:read events:write"))
        response = await probe.http.get(path, headers=bearer(token))
        assert response.status_code == 403
        challenge = response.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert f'scope="{scope}"' in challenge
        assert response.json()["error"] == "insufficient_scope"

    async def test_a_cached_token_stops_working_when_it_expires(
        self, probe: RunningApp, make_client: ClientMaker, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        token = await fetch_token(probe.http, await make_client("profiles:read"))
        assert (await probe.http.get(PROBE_READ, headers=bearer(token))).status_code == 200
        verifier = probe.runtime.verifier
        principal = verifier.cached(token)  # remembered: no signature check from now on
        assert principal is not None
        clock = Clock(start=principal.exp - 1)
        monkeypatch.setattr(verifier, "clock", clock)
        assert (await probe.http.get(PROBE_READ, headers=bearer(token))).status_code == 200
        clock.advance(1)  # the token's exp
        assert_invalid_token(await probe.http.get(PROBE_READ, headers=bearer(token)))


class TestEnrichEndpointAuth:
    """The Connection endpoint is guarded by the same dependency (profiles:read)."""

    async def test_enrich_takes_a_token_with_profiles_read_only(
        self, running: RunningApp, make_client: ClientMaker
    ) -> None:
        path = "/v1/enrich?email=nobody%40example.com"
        reader = await make_client("profiles:read")
        writer = await make_client("profiles:write events:write")
        token = await fetch_token(running.http, reader)
        assert (await running.http.get(path, headers=bearer(token))).status_code == 200
        anonymous = await running.http.get(path)
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer realm=")
        wrong_scope = await running.http.get(
            path, headers=bearer(await fetch_token(running.http, writer))
        )
        assert wrong_scope.status_code == 403
        assert 'error="insufficient_scope"' in wrong_scope.headers["www-authenticate"]
        assert (await revoke(running.http, reader, token)).status_code == 200
        assert_invalid_token(await running.http.get(path, headers=bearer(token)))


FAST_PATH = "/v1/enrich?email=nobody%40example.com"  # profiles:read, answered by the fast path


class TestWhyAKnownTokenIsRefused:
    """A token this worker verified and remembered, refused later: the answer says why, so
    whoever reads the 401 (a Personalize connection's test, an operator) knows what to fix.
    On the fast path too, which hands such a request to the route."""

    @pytest.mark.parametrize("path", [PROBE_READ, FAST_PATH])
    async def test_an_expired_one_says_expired(
        self, probe: RunningApp, make_client: ClientMaker, path: str
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        for _ in range(2):  # verified, then remembered
            assert (await probe.http.get(path, headers=bearer(token))).status_code == 200
        later = time.time() + 7200  # past its expiry, on the verifier's clock
        probe.runtime.verifier.clock = lambda: later
        refused = await probe.http.get(path, headers=bearer(token))
        assert_invalid_token(refused)
        challenge = refused.headers["www-authenticate"]
        assert 'error_description="the access token has expired"' in challenge

    @pytest.mark.parametrize("path", [PROBE_READ, FAST_PATH])
    async def test_a_revoked_one_says_revoked(
        self, probe: RunningApp, make_client: ClientMaker, path: str
    ) -> None:
        client = await make_client("profiles:read")
        token = await fetch_token(probe.http, client)
        for _ in range(2):
            assert (await probe.http.get(path, headers=bearer(token))).status_code == 200
        assert (await revoke(probe.http, client, token)).status_code == 200
        refused = await probe.http.get(path, headers=bearer(token))
        assert_invalid_token(refused)
        challenge = refused.headers["www-authenticate"]
        assert 'error_description="the access token has been revoked"' in challenge
