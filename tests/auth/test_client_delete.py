"""`enrich clients delete`: disables first, deletes, keeps the revocations, and is audited."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from app.core.models import RevokedToken
from tests.auth.conftest import PROBE_READ, mount_probe
from tests.conftest import Backend, OAuthClient, RunningApp
from tests.fixtures.callers import bearer, fetch_token, request_token, revoke
from tests.fixtures.commands import create_client, enrich, ok
from tests.fixtures.polling import eventually


class TestClientsDelete:
    async def test_delete_disables_deletes_keeps_revocations_and_audits(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        mount_probe(running.app)
        created = await create_client(backend, tmp_path, "crm")
        client = OAuthClient(created["client_id"], created["client_secret"], created["scopes"])
        revoked = await fetch_token(running.http, client)
        live = await fetch_token(running.http, client)
        assert (await revoke(running.http, client, revoked)).status_code == 200
        assert (await running.http.get(PROBE_READ, headers=bearer(live))).status_code == 200

        out = await ok(backend, tmp_path, "clients", "delete", client.client_id, "--json")
        assert json.loads(out) == {"client_id": client.client_id, "deleted": True}

        async def refused() -> bool:
            answer = await running.http.get(PROBE_READ, headers=bearer(live))
            return answer.status_code == 401

        await eventually(refused, "the deleted client's token refused")
        listed = json.loads(await ok(backend, tmp_path, "clients", "list", "--json"))
        assert client.client_id not in [row["client_id"] for row in listed]
        async with running.runtime.sessionmaker() as session:
            kept = list(await session.scalars(select(RevokedToken.client_id)))
        assert kept == [client.client_id]
        assert (await request_token(running.http, client)).status_code == 401

        entries = [
            json.loads(line)
            for line in (await ok(backend, tmp_path, "audit", "--json")).splitlines()
        ]
        mine = [e for e in entries if e["target"] == client.client_id]
        assert [e["action"] for e in mine] == [
            "client.created",
            "client.disabled",
            "client.deleted",
        ]
        assert mine[-1]["actor"].startswith("cli:")
        assert mine[-1]["details"] == {"name": "crm", "scopes": ["profiles:read"]}
        assert client.client_secret not in json.dumps(entries)

    async def test_an_unknown_client_is_an_error(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        kept = await create_client(backend, tmp_path, "kept")
        result = await enrich(backend, tmp_path, "clients", "delete", "enr_nosuchclient")
        assert result.returncode == 1
        assert "no client enr_nosuchclient" in result.stderr
        assert "Traceback" not in result.stderr
        listed = json.loads(await ok(backend, tmp_path, "clients", "list", "--json"))
        assert [row["client_id"] for row in listed] == [kept["client_id"]]
        entries = (await ok(backend, tmp_path, "audit", "--json")).splitlines()
        assert [json.loads(line)["action"] for line in entries] == ["client.created"]
        # and twice: the second time the client is unknown
        await ok(backend, tmp_path, "clients", "delete", kept["client_id"])
        again = await enrich(backend, tmp_path, "clients", "delete", kept["client_id"])
        assert again.returncode == 1
        assert f"no client {kept['client_id']}" in again.stderr
