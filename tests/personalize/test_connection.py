"""``enrich personalize connection``: a connection in the shape of Personalize's connections REST
API (and as a UI checklist) that, fed to ``enrich personalize test`` unedited, works against a
fresh demo service; the secret is never printed."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from app.personalize.checklist import checklist
from app.personalize.definition import API_KEY_PLACEHOLDER, SECRET_PLACEHOLDER, connection
from tests.fixtures.databases import create_sqlite_database
from tests.fixtures.servers import ServiceFactory
from tests.fixtures.service import ENRICH, service_env

BASE = "https://enrich.example.com"


async def enrich(directory: Path, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The installed ``enrich`` command, as a user runs it."""
    return await asyncio.to_thread(
        subprocess.run,
        [str(ENRICH), *args],
        env=service_env({"ENRICH_DATABASE_URL": database}),
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class TestTheDefinition:
    def test_it_has_the_shape_of_the_connections_api(self) -> None:
        made = connection(
            base_url=BASE + "/", client_id="enr_abc", fields=["traits.tier", "segments"]
        )
        assert made["systemType"] == "DATA_SYSTEM"
        assert (made["connectionTimeout"], made["socketTimeout"]) == (1000, 1000)
        auth = made["auth"]
        assert auth["authType"] == "OAUTH"
        assert auth["accessTokenUrl"] == f"{BASE}/oauth/token"
        assert (auth["clientId"], auth["clientSecret"]) == ("enr_abc", SECRET_PLACEHOLDER)
        assert {"name": "grant_type", "value": "client_credentials"} in auth["formUrlEncodedItems"]
        request = made["request"]
        assert (request["requestType"], request["connectionUrl"]) == ("POST", f"{BASE}/v1/enrich")
        assert json.loads(request["requestBody"]) == {
            "identifiers": {"guest_ref": "${guest_ref}", "email": "${email}"},
            "fields": ["traits.tier", "segments"],
        }
        assert [i["key"] for i in made["inputMappings"]] == ["guest_ref", "email"]
        assert made["outputMappings"] == [
            {"label": "found", "outputReference": "found", "type": "Boolean"},
            {"label": "matched", "outputReference": "matched", "type": "String"},
            {"label": "traits_tier", "outputReference": "traits.tier", "type": "String"},
            {"label": "segments", "outputReference": "segments", "type": "Array"},
        ]

    def test_a_view_connection_names_the_view_and_maps_its_flat_keys(self) -> None:
        fields = ["traits.tier", "segments"]
        made = connection(
            base_url=BASE,
            client_id="enr_abc",
            fields=fields,
            view=("offer@2", {"traits.tier": "tier"}),
        )
        assert json.loads(made["request"]["requestBody"]) == {
            "identifiers": {"guest_ref": "${guest_ref}", "email": "${email}"},
            "view": "offer@2",
        }
        assert made["outputMappings"][2:] == [
            {"label": "tier", "outputReference": "tier", "type": "String"},
            {"label": "segments", "outputReference": "segments", "type": "Array"},
        ]
        got = connection(
            base_url=BASE, client_id="enr_abc", fields=fields, view=("offer@2", {}), method="GET"
        )
        assert got["request"]["connectionUrl"].endswith("email=${email}&view=offer@2")

    def test_a_get_connection_puts_the_inputs_in_the_url(self) -> None:
        made = connection(
            base_url=BASE,
            client_id="enr_abc",
            fields=["traits.tier"],
            method="GET",
            identifiers=["crm_id"],
        )
        assert made["request"] == {
            "requestType": "GET",
            "connectionUrl": f"{BASE}/v1/enrich?crm_id=${{crm_id}}&fields=traits.tier",
        }

    def test_the_checklist_walks_the_ui(self) -> None:
        text = checklist(connection(base_url=BASE, client_id="enr_abc", fields=["traits.tier"]))
        assert "Create > AI or Data System" in text
        assert f"Access Token URL ...... {BASE}/oauth/token" in text
        assert "grant_type = client_credentials" in text
        assert SECRET_PLACEHOLDER in text
        assert "Read Timeout .......... 1000 ms" in text
        assert "traits_tier <- traits.tier (String)" in text

    def test_the_api_key_option_is_no_auth_with_the_key_header(self) -> None:
        made = connection(
            base_url=BASE, client_id="enr_abc", fields=["traits.tier"], auth_option="API_KEY"
        )
        assert made["auth"] == {"authType": "NONE"}
        assert made["customHeaders"] == [{"name": "X-API-Key", "value": API_KEY_PLACEHOLDER}]
        assert made["useMutualTls"] is False
        text = checklist(made)
        assert "2. Authenticate: None. Headers (Show headers):" in text
        assert f"X-API-Key = {API_KEY_PLACEHOLDER}" in text
        assert SECRET_PLACEHOLDER not in text
        assert '--api-key "$API_KEY"' in text

    def test_mutual_tls_is_said_in_both_forms(self) -> None:
        made = connection(base_url=BASE, client_id="enr_abc", fields=[], mutual_tls=True)
        assert made["useMutualTls"] is True
        text = checklist(made)
        assert "Use mutual TLS: on" in text
        assert "--cert client.pem --key client.key" in text

    def test_the_certificate_option_is_the_body_with_no_secret_over_mutual_tls(self) -> None:
        made = connection(base_url=BASE, client_id="enr_abc", fields=[], auth_option="CERTIFICATE")
        auth = made["auth"]
        assert (auth["authType"], auth["authOption"], auth["clientSecret"]) == ("OAUTH", "BODY", "")
        assert made["useMutualTls"] is True
        text = checklist(made)
        assert "Client Secret ......... (leave it empty: the certificate)" in text
        assert SECRET_PLACEHOLDER not in text
        assert "--secret" not in text
        assert "--cert client.pem --key client.key" in text


class TestTheCommand:
    async def test_bad_fields_and_names_are_refused_clearly(self, tmp_path: Path) -> None:
        database = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
        common = ("personalize", "connection", "--client-id", "enr_x", "--base-url", BASE)
        bad_field = await enrich(tmp_path, database, *common, "--fields", "traits.tier,shoe.size")
        assert bad_field.returncode == 2
        assert "unknown field 'shoe.size'" in bad_field.stderr
        hyphen = await enrich(tmp_path, database, *common, "--name", "enrich-profile")
        assert hyphen.returncode == 2
        assert "hyphens" in hyphen.stderr
        option = await enrich(tmp_path, database, *common, "--auth-option", "BASIC")
        assert option.returncode == 2
        assert "HEADER, BODY, CERTIFICATE, API_KEY" in option.stderr
        made = tmp_path / "made.json"
        made.write_text(json.dumps(connection(base_url=BASE, client_id="enr_x", fields=[])))
        half = await enrich(tmp_path, database, "personalize", "test", str(made), "--cert", "c.pem")
        assert half.returncode == 2
        assert "--cert and --key go together" in half.stderr

    async def test_the_generated_definition_works_unedited_against_a_fresh_demo(
        self, services: ServiceFactory, tmp_path: Path
    ) -> None:
        database = await create_sqlite_database(tmp_path)
        loaded = await enrich(tmp_path, database, "demo", "--profiles", "20")
        assert loaded.returncode == 0, loaded.stderr
        demo = json.loads((tmp_path / "var" / "demo-client.json").read_text())
        service = await services.start(database, None)
        made = await enrich(
            tmp_path,
            database,
            "personalize",
            "connection",
            "--client-id",
            demo["client_id"],
            "--base-url",
            service.base_url,
            "--fields",
            "summary",
        )
        assert made.returncode == 0, made.stderr
        assert "client secret is not in it" in made.stderr
        file = tmp_path / "connection.json"
        file.write_text(made.stdout)
        tested = await enrich(
            tmp_path,
            database,
            "personalize",
            "test",
            str(file),
            "--json",
            "--input",
            "guest_ref=demo-guest",
            "--input",
            "email=demo@example.com",
            "--secret",
            demo["client_secret"],
        )
        assert tested.returncode == 0, tested.stdout + tested.stderr
        outcome: dict[str, Any] = json.loads(tested.stdout)
        assert (outcome["token_status"], outcome["status"]) == (200, 200)
        assert outcome["outputs"]["found"] is True
        assert outcome["outputs"]["matched"] == "guest_ref"
        assert outcome["outputs"]["traits_tier"] == "platinum"
        assert outcome["missing"] == []
        assert outcome["echoed_correlation_id"] == outcome["correlation_id"]
        assert demo["client_secret"] not in tested.stdout + tested.stderr + made.stdout

    async def test_a_connection_pinned_to_the_demo_view_works_unedited(
        self, services: ServiceFactory, tmp_path: Path
    ) -> None:
        database = await create_sqlite_database(tmp_path)
        loaded = await enrich(tmp_path, database, "demo", "--profiles", "20")
        assert loaded.returncode == 0, loaded.stderr
        demo = json.loads((tmp_path / "var" / "demo-client.json").read_text())
        service = await services.start(database, None)
        common = ("personalize", "connection", "--client-id", demo["client_id"])
        both = await enrich(tmp_path, database, *common, "--view", "web_offer", "--fields", "x")
        assert both.returncode == 2
        made = await enrich(
            tmp_path, database, *common, "--base-url", service.base_url, "--view", "web_offer"
        )
        assert made.returncode == 0, made.stderr
        assert "pinned to web_offer@1" in made.stderr
        definition = json.loads(made.stdout)
        assert json.loads(definition["request"]["requestBody"])["view"] == "web_offer@1"
        file = tmp_path / "connection.json"
        file.write_text(made.stdout)
        tested = await enrich(
            tmp_path, database, "personalize", "test", str(file), "--json",
            "--input", "guest_ref=demo-guest", "--input", "email=${email}",
            "--secret", demo["client_secret"],
        )  # fmt: skip
        assert tested.returncode == 0, tested.stdout + tested.stderr
        outcome: dict[str, Any] = json.loads(tested.stdout)
        assert outcome["status"] == 200
        assert outcome["outputs"]["tier"] == "platinum"
        assert outcome["outputs"]["lifetime_value"] == 8421.75
        assert outcome["missing"] == []
        missing = await enrich(tmp_path, database, *common, "--view", "nothing")
        assert missing.returncode == 1
        assert "no view nothing" in missing.stderr

    async def test_a_refused_token_fails_the_command_without_printing_the_secret(
        self, services: ServiceFactory, tmp_path: Path
    ) -> None:
        database = await create_sqlite_database(tmp_path)
        service = await services.start(database, None)
        file = tmp_path / "connection.json"
        made = connection(base_url=service.base_url, client_id="enr_nobody", fields=["segments"])
        file.write_text(json.dumps(made))
        secret = "s3cret-that-must-not-show"
        tested = await enrich(
            tmp_path,
            database,
            "personalize",
            "test",
            str(file),
            "--input",
            "email=a@b.co",
            "--secret",
            secret,
        )
        assert tested.returncode == 1
        assert "token request refused: 401 invalid_client" in tested.stderr
        assert secret not in tested.stdout + tested.stderr
