"""Certificate-bound access tokens (RFC 8705, section 3) through `enrich serve` terminating TLS:
a token asked for over a connection with a client certificate carries its thumbprint (``cnf``
``x5t#S256``), and every request with it, on the fast path and on the routes, must come over
a connection that presents the same certificate; else 401 ``invalid_token``."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.certs import forwarded_certificate
from tests.conftest import AppFactory, Backend, RunningApp
from tests.fixtures.callers import OAuthClient, basic, make_client_on
from tests.fixtures.commands import create_client
from tests.fixtures.tls import (
    Issued,
    Pki,
    client_context,
    der_of,
    make_pki,
    rfc9440,
    thumbprint_of,
    tls_args,
    tls_server,
    wait_listening,
)
from tests.fixtures.tokens import issuer_for, verifier_for

ENRICH = "/v1/enrich?email=nobody%40example.com"  # profiles:read, the fast path
PROFILE = "/v1/profiles/email/nobody%40example.com"  # profiles:read, a route


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


class Door:
    """Requests to the TLS listener over connections that present ``cert`` (or none)."""

    def __init__(self, pki: Pki, port: int, client: dict[str, Any]) -> None:
        self.pki, self.base, self.client = pki, f"https://127.0.0.1:{port}", client

    async def token(self, cert: Issued | None) -> str:
        """A token for the client, asked for over a connection that presents ``cert``."""
        response = await self.send(
            "POST",
            "/oauth/token",
            cert,
            data={"grant_type": "client_credentials"},
            auth=(self.client["client_id"], self.client["client_secret"]),
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def get(self, path: str, token: str, cert: Issued | None) -> httpx.Response:
        return await self.send("GET", path, cert, headers={"Authorization": f"Bearer {token}"})

    async def send(
        self, method: str, path: str, cert: Issued | None, **kwargs: Any
    ) -> httpx.Response:
        async with httpx.AsyncClient(verify=client_context(self.pki, cert), timeout=10) as http:
            return await http.request(method, f"{self.base}{path}", **kwargs)


def refused_as_bound(response: httpx.Response) -> bool:
    return (
        response.status_code == 401
        and response.json()["error"] == "invalid_token"
        and 'error="invalid_token"' in response.headers["www-authenticate"]
    )


@pytest.fixture
async def door(backend: Backend, tmp_path: Path) -> AsyncIterator[Door]:
    """``enrich serve`` on TLS with client certificates optional, and a client of it."""
    pki = make_pki(tmp_path)
    client = await create_client(backend, tmp_path, "personalize")
    async with tls_server(backend, tmp_path, *tls_args(pki)) as port:
        await wait_listening(port, client_context(pki, None), tmp_path)
        yield Door(pki, port, client)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
class TestCertificateBoundTokens:
    async def test_a_bound_token_works_only_over_its_certificate(self, door: Door) -> None:
        pki = door.pki
        token = await door.token(pki.client)
        assert claims_of(token)["cnf"] == {"x5t#S256": thumbprint_of(pki.client)}
        for path, status in ((ENRICH, 200), (PROFILE, 404)):
            for _ in range(3):  # (after the first, the fast path knows the token)
                assert (await door.get(path, token, pki.client)).status_code == status
                for other in (pki.colleague, None):  # another certificate of the CA; none
                    assert refused_as_bound(await door.get(path, token, other))

    async def test_a_token_asked_for_without_a_certificate_is_not_bound(self, door: Door) -> None:
        token = await door.token(None)
        assert "cnf" not in claims_of(token)
        for cert in (None, door.pki.client, door.pki.colleague, None):
            assert (await door.get(ENRICH, token, cert)).status_code == 200

    async def test_introspection_and_metadata_say_so(self, door: Door) -> None:
        pki, client = door.pki, door.client
        token = await door.token(pki.client)
        introspected = await door.send(
            "POST",
            "/oauth/introspect",
            pki.client,
            data={"token": token},
            auth=(client["client_id"], client["client_secret"]),
        )
        assert introspected.status_code == 200, introspected.text
        assert introspected.json()["active"] is True
        assert introspected.json()["cnf"] == {"x5t#S256": thumbprint_of(pki.client)}
        metadata = await door.send("GET", "/.well-known/oauth-authorization-server", None)
        assert metadata.json()["tls_client_certificate_bound_access_tokens"] is True


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
class TestAProxyWithACertificateOfItsOwn:
    async def test_the_callers_certificate_is_the_forwarded_one_never_the_proxys(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        """A proxy that connects with mutual TLS itself (its own client certificate) and
        forwards the caller's: the token is bound to the caller's; with none forwarded, to
        nothing (the proxy's certificate is not the caller's)."""
        pki = make_pki(tmp_path)
        client = await create_client(backend, tmp_path, "personalize")
        settings = {
            "ENRICH_TRUSTED_PROXIES": "127.0.0.1",
            "ENRICH_CLIENT_CERT_HEADER": "Client-Cert",
        }
        async with tls_server(backend, tmp_path, *tls_args(pki), settings=settings) as port:
            await wait_listening(port, client_context(pki, None), tmp_path)
            proxy = Door(pki, port, client)  # over connections with the proxy's certificate
            form = {"grant_type": "client_credentials"}
            auth = (client["client_id"], client["client_secret"])
            forwarded = await proxy.send(
                "POST", "/oauth/token", pki.colleague, data=form, auth=auth,
                headers={"Client-Cert": rfc9440(pki.client)},
            )  # fmt: skip
            token = forwarded.json()["access_token"]
            assert claims_of(token)["cnf"] == {"x5t#S256": thumbprint_of(pki.client)}
            alone = await proxy.send("POST", "/oauth/token", pki.colleague, data=form, auth=auth)
            assert "cnf" not in claims_of(alone.json()["access_token"])


class TestWhatABoundTokenSays:
    """The binding as the verifier reads it (signed by the service's own keys, in process)."""

    @pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
    def test_only_the_certificate_it_names_may_use_it(self, running: RunningApp) -> None:
        verifier, issuer = verifier_for(running, 1 << 20), issuer_for(running)
        token, _ = issuer.issue("enr_padded", ["profiles:read"], "thumb-of-the-client")
        principal = verifier.verify(token)
        assert principal.bound_to == "thumb-of-the-client"
        assert not principal.refuses("thumb-of-the-client")
        assert principal.refuses("thumb-of-another")
        assert principal.refuses(None)
        unbound = verifier.verify(issuer.issue("enr_padded", ["profiles:read"])[0])
        assert not unbound.refuses(None)
        assert not unbound.refuses("thumb-of-another")

    @pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
    def test_a_confirmation_it_cannot_check_binds_to_nothing(self, running: RunningApp) -> None:
        """A ``cnf`` of another method (a DPoP key's ``jkt``) refuses every request here."""
        keyring, settings = running.runtime.keyring, running.runtime.settings
        claims = claims_of(issuer_for(running).issue("enr_padded", ["profiles:read"])[0])
        claims["cnf"] = {"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}
        principal = verifier_for(running, 1 << 20).verify(keyring.sign(claims))
        assert principal.claims["iss"] == settings.token_issuer
        assert principal.refuses(None)
        assert principal.refuses("thumb-of-the-client")


def nginx(issued: Issued) -> str:
    """nginx's $ssl_client_escaped_cert: the PEM, URL-encoded."""
    return urllib.parse.quote(issued.cert.read_text())


class TestForwardedCertificateSpellings:
    def test_each_spelling_is_the_same_certificate(self, tmp_path: Path) -> None:
        pki = make_pki(tmp_path)
        spellings = [rfc9440(pki.client), nginx(pki.client), base64.b64encode(der_of(pki.client))]
        for value in spellings:
            raw = value if isinstance(value, bytes) else value.encode()
            assert forwarded_certificate(raw) == der_of(pki.client)

    @pytest.mark.parametrize(
        "value",
        [
            b"",
            b"::",
            b"not base64!",
            b":aGVsbG8=:",
            b"-----BEGIN CERTIFICATE-----junk",
            b"A" * 20_000,
        ],
    )
    def test_anything_else_is_no_certificate(self, value: bytes) -> None:
        assert forwarded_certificate(value) is None


async def token_through_proxy(app: RunningApp, client: OAuthClient, certificate: str) -> str:
    """A token asked for with ``certificate`` in the Client-Cert header."""
    response = await app.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={
            "Authorization": basic(client.client_id, client.client_secret),
            "Client-Cert": certificate,
        },
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


class TestBehindAProxy:
    """A proxy that terminates TLS forwards the caller's certificate in a header
    (ENRICH_CLIENT_CERT_HEADER), believed only from ENRICH_TRUSTED_PROXIES; the test client's
    address is 203.0.113.7."""

    async def test_the_forwarded_certificate_binds_the_token(
        self, app_factory: AppFactory, tmp_path: Path
    ) -> None:
        pki = make_pki(tmp_path)
        app = await app_factory(trusted_proxies="203.0.113.7", client_cert_header="Client-Cert")
        client = await make_client_on(app)
        token = await token_through_proxy(app, client, rfc9440(pki.client))
        assert claims_of(token)["cnf"] == {"x5t#S256": thumbprint_of(pki.client)}
        ask = {"Authorization": f"Bearer {token}"}
        for _ in range(3):  # (the fast path, once it knows the token)
            same = await app.http.get(ENRICH, headers={**ask, "Client-Cert": nginx(pki.client)})
            assert same.status_code == 200, same.text
            other = await app.http.get(
                ENRICH, headers={**ask, "Client-Cert": rfc9440(pki.colleague)}
            )
            assert refused_as_bound(other)
            assert refused_as_bound(await app.http.get(ENRICH, headers=ask))
            assert refused_as_bound(
                await app.http.get(PROFILE, headers={**ask, "Client-Cert": "garbage"})
            )

    async def test_from_anyone_else_the_header_is_ignored(
        self, app_factory: AppFactory, tmp_path: Path
    ) -> None:
        pki = make_pki(tmp_path)
        app = await app_factory(trusted_proxies="10.0.0.0/8", client_cert_header="Client-Cert")
        client = await make_client_on(app)
        token = await token_through_proxy(app, client, rfc9440(pki.client))
        assert "cnf" not in claims_of(token)

    async def test_without_the_setting_the_header_is_ignored(
        self, app_factory: AppFactory, tmp_path: Path
    ) -> None:
        pki = make_pki(tmp_path)
        app = await app_factory(trusted_proxies="203.0.113.7")
        client = await make_client_on(app)
        token = await token_through_proxy(app, client, rfc9440(pki.client))
        assert "cnf" not in claims_of(token)
