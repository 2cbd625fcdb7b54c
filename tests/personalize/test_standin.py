"""The stand-in calls a live ``enrich serve`` the way a Personalize connection does: a token
with the Header or the Body option, the request with Personalize's headers, the outputs
mapped; and it reports refusals and stalls as Personalize would meet them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.auth.apikey_admin import ApiKeyService
from app.core.db import create_engine, create_sessionmaker
from app.core.settings import Settings
from app.personalize.definition import SECRET_PLACEHOLDER, connection
from app.personalize.standin import MISSING, read_path, run
from tests.conftest import Backend
from tests.fixtures.commands import create_client, ok
from tests.fixtures.polling import eventually
from tests.fixtures.tls import client_context, make_pki, tls_args, tls_server, wait_listening
from tests.personalize.conftest import Live

FIELDS = ["traits.tier", "metrics.lifetime_value", "segments"]
JANE_INPUTS = {"guest_ref": "", "email": " Jane@Example.com "}
HANG_GUARD = 30  # seconds: only so that a broken timeout fails instead of hanging


def definition(live: Live, **options: Any) -> dict[str, Any]:
    return connection(base_url=live.base_url, client_id=live.client_id, fields=FIELDS, **options)


def access_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "http.request"]


class TestAgainstTheService:
    @pytest.mark.parametrize("option", ["HEADER", "BODY"])
    async def test_each_auth_option_gets_a_token_and_the_mapped_outputs(
        self, live: Live, option: str
    ) -> None:
        outcome = await run(definition(live, auth_option=option), JANE_INPUTS, secret=live.secret)
        assert outcome.error is None
        assert outcome.ok
        assert (outcome.token_status, outcome.status) == (200, 200)
        assert outcome.outputs == {
            "found": True,
            "matched": "email",
            "traits_tier": "gold",
            "metrics_lifetime_value": 1830.5,
            "segments": ["vip", "newsletter"],
        }
        assert outcome.missing == []
        assert outcome.token_ms > 0
        assert outcome.request_ms > 0

    async def test_the_correlation_id_comes_back_and_is_on_the_access_line(
        self, live: Live
    ) -> None:
        outcome = await run(definition(live), JANE_INPUTS, secret=live.secret)
        assert outcome.echoed_correlation_id == outcome.correlation_id
        assert outcome.request_id == outcome.correlation_id  # no X-Request-ID was sent

        def logged() -> bool:
            lines = access_lines(live.service.log_text())
            return any(
                line["correlation_id"] == outcome.correlation_id
                and line["route"] == "/v1/enrich"
                and line["status"] == 200
                for line in lines
            )

        await eventually(logged, "the enrich access line with the correlation id")

    async def test_the_fast_path_echoes_it_over_a_socket_too(self, live: Live) -> None:
        headers = {
            "Authorization": f"Bearer {await _token(live)}",
            "Content-Type": "application/json",
        }
        body = json.dumps({"identifiers": {"email": "jane@example.com"}}).encode()
        answers = []
        for n in range(3):  # the first verifies the token; the others take the fast path
            headers["X-Correlation-Id"] = f"corr-{n}"
            answers.append(
                await live.service.request_on_new_connection(
                    "POST", "/v1/enrich", headers=headers, body=body
                )
            )
        for n, answer in enumerate(answers):
            assert answer.status == 200
            assert (
                answer.headers["x-correlation-id"] == answer.headers["x-request-id"] == f"corr-{n}"
            )

    async def test_a_get_connection_works_too(self, live: Live) -> None:
        outcome = await run(definition(live, method="GET"), JANE_INPUTS, secret=live.secret)
        assert outcome.ok, outcome.error
        assert outcome.outputs["traits_tier"] == "gold"

    async def test_an_unknown_guest_is_found_false_with_the_other_outputs_missing(
        self, live: Live
    ) -> None:
        inputs = {"guest_ref": "${guest_ref}", "email": "nobody@example.com"}
        outcome = await run(definition(live), inputs, secret=live.secret)
        assert outcome.ok
        assert outcome.outputs["found"] is False
        assert outcome.outputs["matched"] is None
        assert outcome.missing == ["traits_tier", "metrics_lifetime_value"]
        assert outcome.outputs["segments"] == []

    async def test_a_wrong_secret_stops_at_the_token(self, live: Live) -> None:
        outcome = await run(definition(live, auth_option="BODY"), JANE_INPUTS, secret="wrong")
        assert not outcome.ok
        assert (outcome.stage, outcome.token_status, outcome.status) == ("token", 401, None)
        assert "invalid_client" in (outcome.error or "")

    async def test_the_api_key_option_sends_the_key_and_gets_the_outputs(self, live: Live) -> None:
        key = await api_key_for(live)
        outcome = await run(definition(live, auth_option="API_KEY"), JANE_INPUTS, api_key=key)
        assert outcome.error is None
        assert outcome.ok
        assert (outcome.token_status, outcome.status) == (None, 200)
        assert outcome.outputs["traits_tier"] == "gold"
        wrong = await run(definition(live, auth_option="API_KEY"), JANE_INPUTS, api_key="nope")
        assert (wrong.ok, wrong.stage, wrong.status) == (False, "request", 401)
        unset = await run(definition(live, auth_option="API_KEY"), JANE_INPUTS)
        assert not unset.ok
        assert "--api-key" in (unset.error or "")

    async def test_without_a_secret_it_says_so(self, live: Live) -> None:
        made = definition(live)
        assert made["auth"]["clientSecret"] == SECRET_PLACEHOLDER
        outcome = await run(made, JANE_INPUTS)
        assert not outcome.ok
        assert "--secret" in (outcome.error or "")


async def api_key_for(live: Live) -> str:
    """An API key for the live client, made as `enrich clients api-key create` makes one."""
    engine = create_engine(Settings(_env_file=None, database_url=live.database_url))
    try:
        async with create_sessionmaker(engine)() as session:
            _, plain, _ = await ApiKeyService(session).create(live.client_id)
            await session.commit()
    finally:
        await engine.dispose()
    return plain


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
class TestMutualTls:
    async def test_the_connection_presents_its_certificate_to_both_urls(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        """The service asks for client certificates (required): the stand-in presents its own
        to the token endpoint and to enrich; the token is bound to it, and works."""
        pki = make_pki(tmp_path)
        client = await create_client(backend, tmp_path, "personalize")
        async with tls_server(backend, tmp_path, *tls_args(pki, "required")) as port:
            await wait_listening(port, client_context(pki, pki.client), tmp_path)
            made = connection(
                base_url=f"https://127.0.0.1:{port}",
                client_id=client["client_id"],
                fields=FIELDS,
                mutual_tls=True,
            )
            mine = (str(pki.client.cert), str(pki.client.key))
            ca = str(pki.ca.cert)
            secret = client["client_secret"]
            outcome = await run(made, JANE_INPUTS, secret=secret, verify=ca, cert=mine)
            assert outcome.error is None
            assert (outcome.ok, outcome.token_status, outcome.status) == (True, 200, 200)
            assert outcome.outputs["found"] is False  # (nobody on this database)
            without = await run(made, JANE_INPUTS, secret=secret, verify=ca)
            assert not without.ok
            assert "mutual TLS" in (without.error or "")

    async def test_a_certificate_client_needs_no_secret(
        self, backend: Backend, tmp_path: Path
    ) -> None:
        """A client that authenticates with its certificate alone (tls_client_auth): the
        CERTIFICATE definition, unedited, gets a token and the answer; without the client's
        certificate (another of the CA), the token is refused."""
        pki = make_pki(tmp_path)
        command = ("clients", "create", "--name", "p", "--scopes", "profiles:read", "--json")
        created = json.loads(
            await ok(backend, tmp_path, *command, "--certificate-subject", "CN=personalize")
        )
        async with tls_server(backend, tmp_path, *tls_args(pki, "required")) as port:
            await wait_listening(port, client_context(pki, pki.client), tmp_path)
            made = connection(
                base_url=f"https://127.0.0.1:{port}",
                client_id=created["client_id"],
                fields=FIELDS,
                auth_option="CERTIFICATE",
            )
            ca = str(pki.ca.cert)
            mine = (str(pki.client.cert), str(pki.client.key))
            outcome = await run(made, JANE_INPUTS, verify=ca, cert=mine)
            assert outcome.error is None
            assert (outcome.ok, outcome.token_status, outcome.status) == (True, 200, 200)
            colleague = (str(pki.colleague.cert), str(pki.colleague.key))
            refused = await run(made, JANE_INPUTS, verify=ca, cert=colleague)
            assert (refused.ok, refused.token_status) == (False, 401)


async def _token(live: Live) -> str:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=10) as http:
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(live.client_id, live.secret),
        )
    token: str = response.json()["access_token"]
    return token


# -- a server that accepts connections and never answers --------------------------------------


@pytest.fixture
async def stalling() -> AsyncIterator[str]:
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read nothing, answer nothing

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


class TestTimeouts:
    async def test_a_stalled_request_is_a_read_timeout(self, stalling: str) -> None:
        made = {
            "auth": {"authType": "NONE"},
            "request": {
                "requestType": "GET",
                "connectionUrl": f"{stalling}/v1/enrich?email=${{email}}",
            },
            "connectionTimeout": 1000,
            "socketTimeout": 200,
        }
        outcome = await asyncio.wait_for(run(made, {"email": "a@b.c"}), HANG_GUARD)
        assert not outcome.ok
        assert outcome.stage == "request"
        assert outcome.status is None
        assert outcome.error == "request failed: read timeout (socketTimeout) passed"

    async def test_a_stalled_token_endpoint_is_a_read_timeout_too(self, stalling: str) -> None:
        made = connection(base_url=stalling, client_id="enr_x", fields=FIELDS)
        made["socketTimeout"] = 200
        outcome = await asyncio.wait_for(run(made, JANE_INPUTS, secret="s"), HANG_GUARD)
        assert (outcome.ok, outcome.stage, outcome.token_status) == (False, "token", None)
        assert outcome.error == "token request failed: read timeout (socketTimeout) passed"


class TestOutputPaths:
    @pytest.mark.parametrize(
        ("reference", "expected"),
        [
            ("found", True),
            ("$.traits.tier", "gold"),
            ("traits.address.city", "Oslo"),
            ("segments[1]", "b"),
            ("$.recommendations[0].sku", "S-1"),
            ("traits.nothing", MISSING),
            ("segments[5]", MISSING),
            ("traits..tier", MISSING),
        ],
    )
    def test_references_read_like_json_paths(self, reference: str, expected: Any) -> None:
        answer = {
            "found": True,
            "traits": {"tier": "gold", "address": {"city": "Oslo"}},
            "segments": ["a", "b"],
            "recommendations": [{"sku": "S-1"}],
        }
        assert read_path(answer, reference) is expected or read_path(answer, reference) == expected
