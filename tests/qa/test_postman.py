"""`enrich postman` writes a collection that newman runs, green, against a live server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.service import ENRICH
from tests.qa.server import NODE_BIN, LiveServer, require

NEWMAN = NODE_BIN / "newman"


@pytest.fixture(scope="module")
def written(sqlite_server: LiveServer) -> tuple[Path, Path]:
    """The collection and environment files, written by the command a user runs."""
    output = sqlite_server.workdir / "postman" / "enrich.postman_collection.json"
    done = sqlite_server.run(str(ENRICH), "postman", "-o", str(output))
    assert done.returncode == 0, done.stderr
    environment = output.with_name("enrich.postman_environment.json")
    assert output.exists(), done.stdout
    assert environment.exists(), done.stdout
    return output, environment


def items(collection: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for folder in collection["item"] for item in folder["item"]]


class TestEnrichPostman:
    def test_the_collection_is_postman_v2_1_with_oauth_client_credentials(
        self, written: tuple[Path, Path], sqlite_server: LiveServer
    ) -> None:
        collection = json.loads(written[0].read_text())
        assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
        auth = {entry["key"]: entry["value"] for entry in collection["auth"]["oauth2"]}
        assert collection["auth"]["type"] == "oauth2"
        assert auth["grant_type"] == "client_credentials"
        assert auth["accessTokenUrl"] == "{{base_url}}/oauth/token"
        assert (auth["clientId"], auth["clientSecret"]) == ("{{client_id}}", "{{client_secret}}")
        variables = {variable["key"]: variable["value"] for variable in collection["variable"]}
        assert variables["base_url"] == sqlite_server.base_url
        assert {"client_id", "client_secret"} <= set(variables)

    def test_every_operation_is_a_request_with_personalize_headers_and_a_status_test(
        self, written: tuple[Path, Path], sqlite_server: LiveServer
    ) -> None:
        collection = json.loads(written[0].read_text())
        spec = httpx.get(f"{sqlite_server.base_url}/openapi.json").json()
        documented = {
            (method.upper(), path) for path, ops in spec["paths"].items() for method in ops
        }
        generated = set()
        for item in items(collection):
            request = item["request"]
            path = "/" + "/".join(
                f"{{{part[1:]}}}" if part.startswith(":") else part
                for part in request["url"]["path"]
            )
            generated.add((request["method"], path))
            headers = {header["key"]: header["value"] for header in request["header"]}
            assert headers["Accept"] == "application/json"
            assert headers["Accept-Encoding"] == "gzip"
            tests = "\n".join(
                line
                for event in item["event"]
                if event["listen"] == "test"
                for line in event["script"]["exec"]
            )
            assert "pm.response.code" in tests, item["name"]
        assert generated == documented

    def test_the_enrich_examples_are_a_found_and_an_unknown_guest(
        self, written: tuple[Path, Path]
    ) -> None:
        collection = json.loads(written[0].read_text())
        enrich = [i for i in items(collection) if i["request"]["url"]["path"] == ["v1", "enrich"]]
        bodies = [json.loads(i["request"]["body"]["raw"]) for i in enrich if "body" in i["request"]]
        emails = [body["identifiers"].get("email") for body in bodies]
        assert "demo@example.com" in emails
        assert "nobody@example.com" in emails
        scripts = "\n".join(
            line for i in enrich for e in i["event"] for line in e["script"]["exec"]
        )
        assert "found).to.eql(true)" in scripts
        assert "found).to.eql(false)" in scripts

    def test_newman_runs_every_request_green_twice(
        self, written: tuple[Path, Path], sqlite_server: LiveServer, artifacts: Path
    ) -> None:
        collection, environment = written
        report = sqlite_server.workdir / "newman.json"
        # Only the two secrets are filled in, as a user would in the environment.
        done = sqlite_server.run(
            str(require(NEWMAN, "run `npm ci` in the repository root")),
            "run",
            str(collection),
            "--environment",
            str(environment),
            "--env-var",
            f"client_id={sqlite_server.client_id}",
            "--env-var",
            f"client_secret={sqlite_server.client_secret}",
            "--iteration-count",
            "2",
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report),
            "--color",
            "off",
            "--timeout-request",
            "10000",
        )
        if done.returncode != 0:
            (artifacts / "newman.txt").write_text(done.stdout + done.stderr)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        run = json.loads(report.read_text())["run"]
        stats = run["stats"]
        assert stats["requests"]["failed"] == 0
        assert stats["assertions"]["failed"] == 0
        assert run["failures"] == []
        requests = len(items(json.loads(collection.read_text())))
        # every request, twice, plus the token the pre-request script fetched once
        assert stats["requests"]["total"] == 2 * requests + 1
