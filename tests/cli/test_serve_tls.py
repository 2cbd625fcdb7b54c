"""`enrich serve` terminating TLS itself, with client certificates (issue 13 item 2, part one):
a real listener, certificates made by tests/fixtures/tls.py. The tokens bound to a client
certificate: tests/auth/test_bound_tokens.py."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import Backend
from tests.fixtures.commands import enrich
from tests.fixtures.service import free_port
from tests.fixtures.tls import client_context, healthz, make_pki, tls_server, wait_listening

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


class TestTlsListener:
    async def test_required_client_certificates(self, backend: Backend, tmp_path: Path) -> None:
        pki = make_pki(tmp_path)
        args = (
            "--ssl-certfile", str(pki.server.cert),
            "--ssl-keyfile", str(pki.server.key),
            "--ssl-ca-certs", str(pki.ca.cert),
            "--ssl-client-cert", "required",
        )  # fmt: skip
        async with tls_server(backend, tmp_path, *args) as port:
            await wait_listening(port, client_context(pki, pki.client), tmp_path)
            assert await healthz(port, client_context(pki, pki.client)) == 200
            for refused in (None, pki.stranger):  # no certificate; one of another CA
                with pytest.raises(httpx.TransportError):
                    await healthz(port, client_context(pki, refused))
            with pytest.raises(httpx.TransportError):  # plain HTTP on the TLS port
                async with httpx.AsyncClient(timeout=5) as http:
                    await http.get(f"http://127.0.0.1:{port}/healthz")

    async def test_optional_client_certificates_and_env_settings(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        pki = make_pki(tmp_path)
        args = ("--ssl-certfile", str(pki.server.cert), "--ssl-keyfile", str(pki.server.key),
                "--ssl-ca-certs", str(pki.ca.cert), "--ssl-client-cert", "optional")  # fmt: skip
        async with tls_server(backend, tmp_path, *args) as port:
            await wait_listening(port, client_context(pki, None), tmp_path)
            assert await healthz(port, client_context(pki, pki.client)) == 200
            assert await healthz(port, client_context(pki, None)) == 200
            with pytest.raises(httpx.TransportError):  # a certificate sent is still checked
                await healthz(port, client_context(pki, pki.stranger))

    @pytest.mark.parametrize(
        ("args", "says"),
        [
            (("--ssl-client-cert", "required"), "certificate"),
            (("--ssl-keyfile", "k.pem"), "certificate"),
            (("--ssl-certfile", "missing.pem"), "no such file"),
            (("--ssl-client-cert", "sometimes"), "one of"),
        ],
    )
    async def test_contradictory_options_stop_before_serving(
        self, backend: Backend, tmp_path: Path, args: tuple[str, ...], says: str
    ) -> None:
        result = await enrich(backend, tmp_path, "serve", "--port", str(free_port()), *args)
        assert result.returncode == 2
        assert says in result.stderr
        assert "Traceback" not in result.stderr
