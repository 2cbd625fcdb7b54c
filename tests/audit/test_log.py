"""The audit log: every administrative change and erasure, with who and when, never a secret."""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.audit.log import AuditLog
from tests.conftest import Backend, RunningApp
from tests.fixtures.callers import Caller
from tests.fixtures.commands import create_client, enrich, ok


class TestAuditFromTheCommandLine:
    async def test_client_and_key_changes_are_listed_with_who_and_never_the_secret(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        created = await create_client(backend, tmp_path, "crm")
        client_id, first_secret = created["client_id"], created["client_secret"]
        rotated = json.loads(await ok(backend, tmp_path, "clients", "rotate", client_id, "--json"))
        limited = await ok(
            backend, tmp_path, "clients", "limit", client_id, "--rps", "50", "--burst", "80"
        )
        assert "50 requests/s, burst 80" in limited
        allowed = await ok(
            backend, tmp_path, "clients", "allow", client_id, "203.0.113.0/24", "198.51.100.7"
        )
        assert "203.0.113.0/24 198.51.100.7/32" in allowed
        await ok(backend, tmp_path, "clients", "disable", client_id)
        await ok(backend, tmp_path, "keys", "rotate")

        listed = await ok(backend, tmp_path, "audit", "--json", "--since", "1h")
        entries = [json.loads(line) for line in listed.splitlines()]
        mine = [e for e in entries if e["target"] == client_id]
        assert [e["action"] for e in mine] == [
            "client.created",
            "client.rotated",
            "client.limited",
            "client.allowlisted",
            "client.disabled",
        ]
        assert {e["actor"] for e in mine} == {f"cli:{getpass.getuser()}"}
        assert mine[0]["details"] == {
            "name": "crm",
            "scopes": ["profiles:read"],
            "auth_method": "client_secret",
        }
        assert mine[2]["details"] == {"rps": 50.0, "burst": 80}
        assert mine[3]["details"] == {"networks": ["203.0.113.0/24", "198.51.100.7/32"]}
        assert entries[-1]["action"] == "key.rotated"
        for entry in mine:
            at = datetime.fromisoformat(entry["at"])
            assert abs(datetime.now(UTC) - at) < timedelta(minutes=5)

        table = await ok(backend, tmp_path, "audit")
        for secret in (first_secret, rotated["client_secret"]):
            assert secret not in listed
            assert secret not in table
        assert "client.limited" in table

    async def test_since_leaves_out_older_entries(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        await ok(backend, tmp_path, "clients", "create", "--name", "a", "--scopes", "admin")
        later = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
        assert (await ok(backend, tmp_path, "audit", "--json", "--since", later)).strip() == ""
        assert "client.created" in await ok(backend, tmp_path, "audit", "--json", "--since", "1d")

    async def test_bad_input_is_refused_with_a_message(
        self, backend: Backend, running: RunningApp, tmp_path: Path
    ) -> None:
        bad_since = await enrich(backend, tmp_path, "audit", "--since", "yesterday-ish")
        assert bad_since.returncode == 2
        unknown = await enrich(backend, tmp_path, "clients", "limit", "enr_nope", "--rps", "5")
        assert unknown.returncode == 1
        assert "no client enr_nope" in unknown.stderr
        created = await create_client(backend, tmp_path, "b")
        bad_range = await enrich(
            backend, tmp_path, "clients", "allow", created["client_id"], "10.0.0.300/8"
        )
        assert bad_range.returncode == 1
        assert "not an address range" in bad_range.stderr
        neither = await enrich(backend, tmp_path, "clients", "limit", created["client_id"])
        assert neither.returncode == 2


class TestAuditOfErasures:
    async def test_an_erasure_names_the_client_and_only_a_hash_of_the_identifier(
        self, running: RunningApp, new_caller
    ) -> None:  # type: ignore[no-untyped-def]
        caller: Caller = await new_caller()
        path = "/v1/profiles/email/erase.me@example.com"
        document: dict[str, Any] = {"traits": {"tier": "gold"}}
        assert (
            await running.http.put(path, json=document, headers=caller.headers)
        ).status_code == 201
        assert (await running.http.delete(path, headers=caller.headers)).status_code == 204
        assert (await running.http.delete(path, headers=caller.headers)).status_code == 404
        async with running.runtime.sessionmaker() as session:
            entries = [e for e in await AuditLog(session).list() if e.action == "profile.erased"]
        assert len(entries) == 1  # the second DELETE erased nothing
        entry = entries[0]
        assert entry.actor == f"client:{caller.client_id}"
        assert entry.target is not None
        assert entry.target.startswith("email:")
        assert "erase.me" not in entry.target
