"""Client authentication by certificate (RFC 8705, section 2): a client registered with
``enrich clients create --certificate-subject`` (tls_client_auth) or ``--certificate``
(self_signed_tls_client_auth) gets a token for its client_id alone, over a connection that
presents its certificate, and for nothing else; the token is bound to that certificate."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.clients import ClientService
from tests.auth.test_bound_tokens import ENRICH, claims_of
from tests.conftest import AppFactory, Backend
from tests.fixtures.commands import create_client, enrich, ok
from tests.fixtures.tls import (
    Issued,
    Pki,
    client_context,
    issue,
    make_pki,
    rfc9440,
    self_signed,
    thumbprint_of,
    tls_server,
    wait_listening,
)

FORM = {"grant_type": "client_credentials"}


def refused_client(response: httpx.Response) -> bool:
    return response.status_code == 401 and response.json()["error"] == "invalid_client"


async def create(backend: Backend, tmp_path: Path, *options: str) -> dict[str, Any]:
    command = ("clients", "create", "--name", "p", "--scopes", "profiles:read", "--json")
    created: dict[str, Any] = json.loads(await ok(backend, tmp_path, *command, *options))
    return created


@dataclass
class Listener:
    """``enrich serve`` on TLS; its handshake accepts the test CA's certificates and two
    self-signed ones (``mine`` registered by a client, ``other`` by nobody)."""

    pki: Pki
    mine: Issued
    other: Issued
    base: str

    async def post(self, path: str, cert: Issued | None, **kwargs: Any) -> httpx.Response:
        context = client_context(self.pki, cert)
        async with httpx.AsyncClient(verify=context, timeout=10) as http:
            return await http.post(f"{self.base}{path}", **kwargs)

    async def token(self, cert: Issued | None, **form: str) -> httpx.Response:
        return await self.post("/oauth/token", cert, data={**FORM, **form})

    async def enrich(self, token: str, cert: Issued | None) -> int:
        context = client_context(self.pki, cert)
        async with httpx.AsyncClient(verify=context, timeout=10) as http:
            answer = await http.get(
                f"{self.base}{ENRICH}", headers={"Authorization": f"Bearer {token}"}
            )
        return answer.status_code


@pytest.fixture
async def listener(backend: Backend, tmp_path: Path) -> AsyncIterator[Listener]:
    pki = make_pki(tmp_path)
    mine, other = self_signed(tmp_path, "mine", "mine"), self_signed(tmp_path, "other", "other")
    handshake = tmp_path / "handshake.pem"  # what the TLS layer accepts
    handshake.write_bytes(b"".join(p.read_bytes() for p in (pki.ca.cert, mine.cert, other.cert)))
    args = ("--ssl-certfile", str(pki.server.cert), "--ssl-keyfile", str(pki.server.key),
            "--ssl-ca-certs", str(handshake), "--ssl-client-cert", "optional")  # fmt: skip
    # The CA alone vouches for subjects (the handshake bundle also holds self-signed ones).
    settings = {"ENRICH_CLIENT_CA_CERTS": str(pki.ca.cert)}
    async with tls_server(backend, tmp_path, *args, settings=settings) as port:
        await wait_listening(port, client_context(pki, None), tmp_path)
        yield Listener(pki, mine, other, f"https://127.0.0.1:{port}")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
class TestThroughTheTlsListener:
    async def test_a_certificate_with_the_subject_gets_a_token_bound_to_it(
        self, listener: Listener, backend: Backend, tmp_path: Path
    ) -> None:
        pki = listener.pki
        client = await create(backend, tmp_path, "--certificate-subject", "CN=personalize")
        assert client["client_secret"] is None
        assert client["auth_method"] == "tls_client_auth"
        answer = await listener.token(pki.client, client_id=client["client_id"])
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        assert claims_of(token)["cnf"] == {"x5t#S256": thumbprint_of(pki.client)}
        assert await listener.enrich(token, pki.client) == 200
        assert await listener.enrich(token, pki.colleague) == 401
        # Another subject of the same CA, a self-signed look-alike the handshake accepts, no
        # certificate, a secret: not this client.
        for cert in (pki.colleague, listener.mine, None):
            assert refused_client(await listener.token(cert, client_id=client["client_id"]))
        with_secret = await listener.token(
            pki.client, client_id=client["client_id"], client_secret="x"
        )
        assert refused_client(with_secret)
        # Basic with an empty secret (Personalize's Header option, secret left empty): the
        # certificate decides; with a secret, refused (it has none).
        for cert, secret, status in (
            (pki.client, "", 200),
            (pki.colleague, "", 401),
            (pki.client, "x", 401),
        ):
            auth = (client["client_id"], secret)
            basic = await listener.post("/oauth/token", cert, data=FORM, auth=auth)
            assert basic.status_code == status, basic.text

    async def test_a_registered_self_signed_certificate_gets_a_token(
        self, listener: Listener, backend: Backend, tmp_path: Path
    ) -> None:
        client = await create(backend, tmp_path, "--certificate", str(listener.mine.cert))
        assert client["auth_method"] == "self_signed_tls_client_auth"
        answer = await listener.token(
            listener.mine, client_id=client["client_id"], client_secret=""
        )
        assert answer.status_code == 200, answer.text
        cnf = claims_of(answer.json()["access_token"])["cnf"]
        assert cnf == {"x5t#S256": thumbprint_of(listener.mine)}
        for cert in (listener.other, listener.pki.client, None):
            assert refused_client(await listener.token(cert, client_id=client["client_id"]))

    async def test_a_client_with_a_secret_needs_its_secret(
        self, listener: Listener, backend: Backend, tmp_path: Path
    ) -> None:
        client = await create_client(backend, tmp_path, "personalize")
        for cert in (listener.pki.client, listener.mine):
            assert refused_client(await listener.token(cert, client_id=client["client_id"]))
        auth = (client["client_id"], client["client_secret"])
        answer = await listener.post("/oauth/token", listener.pki.client, data=FORM, auth=auth)
        assert answer.status_code == 200, answer.text

    async def test_certify_turns_a_secret_into_a_certificate(
        self, listener: Listener, backend: Backend, tmp_path: Path
    ) -> None:
        client = await create_client(backend, tmp_path, "personalize")
        client_id, auth = client["client_id"], (client["client_id"], client["client_secret"])
        await ok(
            backend,
            tmp_path,
            "clients",
            "certify",
            client_id,
            "--certificate-subject",
            "CN=personalize",
        )
        assert refused_client(await listener.post("/oauth/token", None, data=FORM, auth=auth))
        answer = await listener.token(listener.pki.client, client_id=client_id)
        assert answer.status_code == 200, answer.text
        rotated = await enrich(backend, tmp_path, "clients", "rotate", client_id)
        assert rotated.returncode == 1
        assert "certificate" in rotated.stderr + rotated.stdout
        # Two self-signed certificates at once, while one replaces the other.
        both = ("--certificate", str(listener.mine.cert), "--certificate", str(listener.other.cert))
        await ok(backend, tmp_path, "clients", "certify", client_id, *both)
        for cert in (listener.mine, listener.other):
            assert (await listener.token(cert, client_id=client_id)).status_code == 200
        assert refused_client(await listener.token(listener.pki.client, client_id=client_id))


class TestBehindAProxy:
    """The proxy forwards whatever certificate the caller presented (as it must when some
    clients' are self-signed): the chain to ENRICH_CLIENT_CA_CERTS is checked here."""

    async def test_a_look_alike_subject_from_another_ca_is_refused(
        self, app_factory: AppFactory, tmp_path: Path
    ) -> None:
        pki = make_pki(tmp_path)
        _, rogue, rogue_key = issue(tmp_path, "rogue-ca", "rogue")
        impostor, _, _ = issue(tmp_path, "impostor", "personalize", ca=(rogue, rogue_key))
        app = await app_factory(
            trusted_proxies="203.0.113.7",
            client_cert_header="Client-Cert",
            client_ca_certs=str(pki.ca.cert),
        )
        async with app.runtime.sessionmaker() as session:
            client, _ = await ClientService(session).create(
                "p", "profiles:read", subject="CN=personalize"
            )
            await session.commit()

        async def token(cert: Issued) -> httpx.Response:
            form = {**FORM, "client_id": client.client_id}
            headers = {"Client-Cert": rfc9440(cert)}
            return await app.http.post("/oauth/token", data=form, headers=headers)

        answer = await token(pki.client)
        assert answer.status_code == 200, answer.text
        assert claims_of(answer.json()["access_token"])["cnf"]["x5t#S256"] == thumbprint_of(
            pki.client
        )
        assert refused_client(await token(impostor))
        assert refused_client(await token(pki.stranger))

    async def test_without_the_cas_no_subject_is_believed(
        self, app_factory: AppFactory, tmp_path: Path
    ) -> None:
        pki = make_pki(tmp_path)
        app = await app_factory(trusted_proxies="203.0.113.7", client_cert_header="Client-Cert")
        async with app.runtime.sessionmaker() as session:
            client, _ = await ClientService(session).create(
                "p", "profiles:read", subject="CN=personalize"
            )
            await session.commit()
        form = {**FORM, "client_id": client.client_id}
        answer = await app.http.post(
            "/oauth/token", data=form, headers={"Client-Cert": rfc9440(pki.client)}
        )
        assert refused_client(answer)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
class TestTheCommand:
    @pytest.mark.parametrize(
        "options",
        [
            pytest.param(("--certificate-subject", "not a name"), id="not RFC 4514"),
            pytest.param(("--certificate", "/nonexistent.pem"), id="no such file"),
            pytest.param(("--certificate", "pyproject.toml"), id="not a certificate"),
            pytest.param(("--certificate-subject", "CN=a", "--certificate", "x.pem"), id="both"),
        ],
    )
    async def test_a_bad_certificate_option_is_a_usage_error(
        self, backend: Backend, tmp_path: Path, options: tuple[str, ...]
    ) -> None:
        (tmp_path / "pyproject.toml").write_text("[project]\n")
        command = ("clients", "create", "--name", "p", "--scopes", "profiles:read")
        result = await enrich(backend, tmp_path, *command, *options)
        assert result.returncode == 2, result.stdout + result.stderr
        listed = json.loads(await ok(backend, tmp_path, "clients", "list", "--json"))
        assert listed == []

    async def test_the_subject_is_kept_in_one_spelling(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        spelled = "CN = personalize , O=Example\\, Inc."
        await create(backend, tmp_path, "--certificate-subject", spelled)
        listed = json.loads(await ok(backend, tmp_path, "clients", "list", "--json"))
        assert listed[0]["auth_method"] == "tls_client_auth"
        assert listed[0]["certificate_subject"] == "CN=personalize,O=Example\\, Inc."
